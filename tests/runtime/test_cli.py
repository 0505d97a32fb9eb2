"""python -m runtime: image, folder and video jobs round-trip; an output never replaces an input
however it is spelled (exit 2); every per-file failure is reported and the run goes on (exit 1);
a truncated video fails unless --accept-partial; SIGINT / SIGTERM end with the summary and 130 /
143, and what a SIGKILL left is cleaned by the next run; the backend is logged once. Tiny random
model saved to a weights file, CPU."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from media_helpers import decoded_frames, make_video, needs_tmpfs, tiny_filesystem
from runtime_helpers import frame_u8, make_tiny_model

from runtime import io
from runtime.__main__ import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    make_tiny_model().save(path)
    return path


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"{path} was not written"
    return image


def _run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv] + ["--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_folder_round_trip_skips_and_names_a_bad_file(tmp_path, weights, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), frame_u8(24, 32, seed=1))
    cv2.imwrite(str(src / "b.png"), frame_u8(16, 24, channels=1, seed=2)[..., 0])
    cv2.imwrite(str(src / "c.png"), np.dstack([frame_u8(16, 16, seed=3), np.full((16, 16), 77, np.uint8)]))
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    (src / "notes.txt").write_text("ignored: not an image")
    code, out, _ = _run(capsys, src, dst, "--weights", weights)
    assert code == 1
    assert "done: 3" in out and "failed: 1" in out and "broken.jpg" in out and "frames/s" in out
    assert sorted(p.name for p in dst.iterdir()) == ["a.png", "b.png", "c.png"]
    assert _read(dst / "a.png").shape == (24, 32, 3)
    assert _read(dst / "b.png").shape == (16, 24)
    bgra = _read(dst / "c.png")
    assert bgra.shape == (16, 16, 4) and (bgra[..., 3] == 77).all()

    (src / "broken.jpg").unlink()
    code, out, _ = _run(capsys, src, dst, "--weights", weights)
    assert code == 0 and "failed: 0" in out


def test_single_image_and_16_bit_depth(tmp_path, weights, capsys):
    src = tmp_path / "deep.png"
    cv2.imwrite(str(src), (frame_u8(16, 24).astype(np.uint16) * 257))
    code, out, _ = _run(capsys, src, tmp_path / "sharp.png", "--weights", weights, "--seed", "3")
    assert code == 0 and "done: 1" in out
    result = _read(tmp_path / "sharp.png")
    assert result.dtype == np.uint16 and result.shape == (16, 24, 3)


def test_video_round_trip_keeps_frame_count_size_and_fps(tmp_path, weights, capsys):
    src, dst = tmp_path / "clip.avi", tmp_path / "sharp.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter.fourcc(*"MJPG"), 12.0, (64, 48))
    for i in range(12):
        writer.write(frame_u8(48, 64, seed=i))
    writer.release()
    code, out, _ = _run(capsys, src, dst, "--weights", weights)
    assert code == 0 and "done: 1 (12 frames)" in out
    capture = cv2.VideoCapture(str(dst))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert (count, size, fps) == (12, (64, 48), 12.0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("argv, words", [
    (["missing.png", "out.png"], "does not exist"),
    (["{img}", "out.png", "--tile", "30"], "multiple of 8"),
    (["{img}", "out.xyz"], "expected an image file"),
    (["{img}", "out.png", "--backend", "magic"], "invalid choice"),
    (["{img}", "out.png", "--weights", "nowhere.safetensors"], "does not exist"),
    (["{img}", "out.png", "--torch-preset", "fastest", "--backend", "onnxruntime"],
     "--torch-preset fastest applies to the PyTorch backend"),
    (["{img}", "out.png", "--torch-preset", "fastest", "--precision", "fp32"], "precision fp32 was asked for"),
    (["{img}", "out.png", "--torch-preset", "turbo"], "invalid choice"),
    # on the CPU the Deblurrer itself refuses: the fastest form's kernels and graphs need CUDA
    (["{img}", "out.png", "--torch-preset", "fastest"], "need(s) a CUDA device, got cpu"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, weights, capsys, argv, words):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), frame_u8(8, 8))
    argv = [a.replace("{img}", str(img)) for a in argv]
    if "--weights" not in argv:
        argv += ["--weights", str(weights)]
    with pytest.raises(SystemExit) as info:
        main(argv + ["--device", "cpu"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_the_torch_preset_becomes_the_deblurrers_settings():
    from engines.torch_settings import TorchSettings
    from runtime.cli import Parser, add_deblurrer_arguments, deblurrer_options

    parser = Parser()
    add_deblurrer_arguments(parser)
    options = deblurrer_options(parser.parse_args(["--torch-preset", "compiled"]))
    assert options["torch_settings"] is TorchSettings.preset("compiled")
    assert options["backend"] == "auto" and options["precision"] == "auto"
    assert "torch_settings" not in deblurrer_options(parser.parse_args([]))  # the Deblurrer's default

# ------------------------------------------------------------- an output never replaces an input


def _bad_paths(tmp_path: Path, case: str) -> tuple[Path, Path, Path]:
    """(input, output, the input that would be overwritten) for one way of spelling the same file."""
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    img = d / "img.png"
    cv2.imwrite(str(img), frame_u8(16, 16))
    video = d / "clip.avi"
    make_video(video, frames=2, size=(16, 16), codec="mjpeg", pixel_format="yuvj420p", audio=None)
    (tmp_path / "link").symlink_to(d)
    if case == "same path":
        return img, img, img
    if case == "dot-dot":
        return img, d / "sub" / ".." / "img.png", img
    if case == "its own folder":
        return img, d, img
    if case == "file symlink":
        (d / "alias.png").symlink_to(img)
        return img, d / "alias.png", img
    if case == "folder symlink":
        return img, tmp_path / "link" / "img.png", img
    if case == "hard link":
        os.link(img, d / "hard.png")
        return img, d / "hard.png", img
    if case == "video":
        return video, tmp_path / "link" / "clip.avi", video
    if case == "video into its folder":
        return video, d, video
    if case == "folder onto itself":
        return d, tmp_path / "link", img
    if case == "folder into itself":
        return d, d / "sharp", img
    raise ValueError(case)


@pytest.mark.parametrize("case", ["same path", "dot-dot", "its own folder", "file symlink", "folder symlink",
                                  "hard link", "video", "video into its folder", "folder onto itself",
                                  "folder into itself"])
def test_an_output_never_replaces_an_input(tmp_path, weights, capsys, case):
    src, dst, victim = _bad_paths(tmp_path, case)
    before = {p: p.read_bytes() for p in (tmp_path / "d").rglob("*") if p.is_file()}
    listing = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as info:
        main([str(src), str(dst), "--weights", str(weights), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert (victim.name in err or str(src) in err) and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in (tmp_path / "d").rglob("*") if p.is_file()} == before
    assert sorted(str(p) for p in tmp_path.rglob("*")) == listing  # nothing created either


def test_folder_input_with_a_file_name_as_output_is_refused(tmp_path, weights, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), frame_u8(16, 16))
    with pytest.raises(SystemExit) as info:
        main([str(src), str(tmp_path / "result.png"), "--weights", str(weights), "--device", "cpu"])
    assert info.value.code == 2 and "named like a file" in capsys.readouterr().err
    assert not (tmp_path / "result.png").exists()


@pytest.mark.parametrize("setup, words", [
    ("parent is a file", "is a file, not a folder"),
    ("empty folder", "holds no images"),
    ("only hidden files", "holds no images"),
])
def test_unusable_paths_exit_2(tmp_path, weights, capsys, setup, words):
    src = tmp_path / "in"
    src.mkdir()
    out = tmp_path / "out"
    if setup == "parent is a file":
        cv2.imwrite(str(src / "a.png"), frame_u8(16, 16))
        (tmp_path / "file.txt").write_text("x")
        out = tmp_path / "file.txt" / "out"
    elif setup == "only hidden files":
        cv2.imwrite(str(src / ".a.x1y2z3w4.png"), frame_u8(16, 16))
    with pytest.raises(SystemExit) as info:
        main([str(src), str(out), "--weights", str(weights), "--device", "cpu"])
    assert info.value.code == 2 and words in capsys.readouterr().err


@needs_tmpfs
def test_read_only_output_is_refused_before_anything_runs(tmp_path, weights, capsys):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), frame_u8(16, 16))
    with tiny_filesystem(tmp_path / "ro", read_only=True) as folder:
        with pytest.raises(SystemExit) as info:
            main([str(img), str(folder / "a.png"), "--weights", str(weights), "--device", "cpu"])
    assert info.value.code == 2 and "read-only file system" in capsys.readouterr().err


# ---------------------------------------------------------------- failures of one file, any kind


def test_every_failure_is_reported_and_the_run_goes_on(tmp_path, weights, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    long_name = "l" * 248 + ".png"  # 252 characters: its temporary name must be cut to fit 255
    for name in ("a.png", "b.png", "c.png", long_name):
        cv2.imwrite(str(src / name), frame_u8(16, 24, seed=len(name)))
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (dst / "b.png").mkdir(parents=True)  # an output name taken by a folder
    code, out, err = _run(capsys, src, dst, "--weights", weights)
    assert code == 1 and "Traceback" not in out + err
    assert "done: 3 (3 frames)" in out and "failed: 3" in out
    assert "b.png:" in out and "is a folder" in out
    assert "broken.jpg: " in out and "OpenCV cannot read it" in out
    assert "gone.png: " in out and "does not exist" in out
    assert sorted(p.name for p in dst.iterdir()) == sorted(["a.png", "b.png", "c.png", long_name])
    assert _read(dst / long_name).shape == (16, 24, 3)


@needs_tmpfs
def test_full_disk_is_reported_per_file(tmp_path, weights, capsys):
    src = tmp_path / "in"
    src.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)  # ~50 kB as PNG
    for i in range(3):
        cv2.imwrite(str(src / f"{i}.png"), noise)
    with tiny_filesystem(tmp_path / "disk", size="64k") as disk:
        code, out, _ = _run(capsys, src, disk, "--weights", weights, "--tile", "64", "--tile-overlap", "8")
        assert code == 1 and "disk full (ENOSPC) writing" in out and "OpenCV could not encode" not in out
        assert not [p for p in disk.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------------ videos


def test_video_into_a_folder_keeps_odd_size_and_audio(tmp_path, weights, capsys):
    src, folder = tmp_path / "clip.mp4", tmp_path / "out"
    folder.mkdir()
    make_video(src, frames=10, size=(63, 47), audio="aac")
    code, out, _ = _run(capsys, src, folder, "--weights", weights)
    assert code == 0 and "done: 1 (10 frames)" in out
    frames = decoded_frames(folder / "clip.mp4")
    assert len(frames) == 10 and frames[0].shape == (47, 63, 3)


def test_truncated_video_fails_with_both_counts_unless_accepted(tmp_path, weights, capsys):
    src = tmp_path / "clip.avi"
    make_video(src, frames=10, size=(128, 96), codec="mjpeg", pixel_format="yuvj420p", audio=None)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(src.read_bytes()[:int(src.stat().st_size * 0.4)])
    code, out, _ = _run(capsys, cut, tmp_path / "sharp.avi", "--weights", weights)
    assert code == 1 and "failed: 1" in out and "declares 10" in out and "frames decoded" in out
    assert not (tmp_path / "sharp.avi").exists()
    code, out, _ = _run(capsys, cut, tmp_path / "sharp.avi", "--weights", weights, "--accept-partial")
    assert code == 0 and "partial source kept" in out
    assert 0 < len(decoded_frames(tmp_path / "sharp.avi")) < 10


# ------------------------------------------------------------------------------- interruptions


def _long_video(tmp_path: Path, frames: int = 150) -> Path:
    src = tmp_path / "long.avi"
    make_video(src, frames=frames, size=(32, 24), codec="mjpeg", pixel_format="yuvj420p", audio="pcm_s16le")
    return src


def _signal_when_writing(dst: Path, signum: int, pid: int, timeout: float = 120) -> threading.Thread:
    """Send ``signum`` to ``pid`` once the video's temporary file exists (mid-video)."""
    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not io.temporaries_of(dst) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(pid, signum)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_abandons_the_file_removes_its_temporary_and_prints_the_summary(tmp_path, weights, capsys,
                                                                               signum, status):
    src, dst = _long_video(tmp_path), tmp_path / "sharp.avi"
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # SIG_IGN in a background job
    watcher = _signal_when_writing(dst, signum, os.getpid())
    code, out, err = _run(capsys, src, dst, "--weights", weights)
    watcher.join()
    assert code == status, out + err
    assert f"interrupted by {signal.Signals(signum).name}; long.avi abandoned" in out and "done: 0" in out
    assert not dst.exists() and io.temporaries_of(dst) == []
    assert {s: signal.getsignal(s) for s in before} == before  # handlers given back


def _cli(*argv: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runtime", *map(str, argv), "--device", "cpu", "-q"], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigterm_to_the_process_exits_143_without_a_traceback(tmp_path, weights):
    src, dst = _long_video(tmp_path), tmp_path / "sharp.avi"
    job = _cli(src, dst, "--weights", weights)
    _signal_when_writing(dst, signal.SIGTERM, job.pid).join()
    out, err = job.communicate(timeout=120)
    assert job.returncode == 143 and "Traceback" not in err, err
    assert "interrupted by SIGTERM" in out and io.temporaries_of(dst) == [] and not dst.exists()


def test_what_a_sigkill_left_is_cleaned_by_the_next_run(tmp_path, weights, capsys):
    src, dst = _long_video(tmp_path, frames=40), tmp_path / "sharp.avi"
    job = _cli(src, dst, "--weights", weights)
    _signal_when_writing(dst, signal.SIGKILL, job.pid).join()
    job.communicate(timeout=60)
    left = io.temporaries_of(dst)
    assert job.returncode == -signal.SIGKILL and len(left) == 1 and left[0].name.startswith(".sharp.")
    code, out, _ = _run(capsys, src, dst, "--weights", weights)
    assert code == 0 and "done: 1 (40 frames)" in out
    assert io.temporaries_of(dst) == [] and len(decoded_frames(dst)) == 40


def test_backend_choice_is_logged_once(tmp_path, weights):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), frame_u8(16, 16))
    job = _cli(img, tmp_path / "b.png", "--weights", weights)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    reason = "PyTorch model on cpu"  # the choice's explanation, as runtime.selection words it
    assert (out + err).count(reason) == 1, out + err
    assert "backend: torch on cpu" in out
