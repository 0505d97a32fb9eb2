"""python -m runtime: image, folder and video jobs round-trip, bad files are skipped and named,
exit codes 0 / 1 / 2 (tiny random model saved to a weights file, CPU)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_helpers import frame_u8, make_tiny_model

from runtime.__main__ import main


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
