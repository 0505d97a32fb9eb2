"""Folder evaluation: pairing by name, per-image rows, CSV/JSON output and CLI exit codes."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hidiff import metrics
from hidiff.evaluate import PAPER_RESULTS, evaluate_folders, evaluate_pairs, main

REPO_ROOT = Path(__file__).resolve().parents[2]
Folders = tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]


def _photo(seed: int, size: int = 48) -> np.ndarray:
    """A smooth colour image (so ECC alignment has structure to lock on) as uint8 RGB."""
    noise = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


def _degrade(image: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-6, 7, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture()
def folders(tmp_path: Path) -> Folders:
    """pred/ and target/ with three pairs; the listing order of the two differs on purpose."""
    images = {}
    for index, name in enumerate(("scene1-001", "scene1-002", "scene2-001")):
        target = _photo(index)
        pred = _degrade(target, 10 + index)
        _write(tmp_path / "target" / f"{name}.png", target)
        _write(tmp_path / "pred" / f"{name}.png", pred)
        images[name] = (pred, target)
    return tmp_path / "pred", tmp_path / "target", images


def test_evaluate_folders_scores_each_pair_by_name(folders: Folders) -> None:
    pred_dir, target_dir, images = folders
    result = evaluate_folders(pred_dir, target_dir, progress=False)
    assert [row.name for row in result.rows] == sorted(images)
    for row in result.rows:
        pred, target = images[row.name]
        assert row.psnr == pytest.approx(metrics.psnr(pred, target), abs=1e-12)
        assert row.ssim == pytest.approx(metrics.ssim(pred, target, "matlab"), abs=1e-12)
    assert result.mean_psnr == pytest.approx(np.mean([r.psnr for r in result.rows]))
    assert (result.protocol, result.ssim_mode) == ("gopro", "matlab")


def test_evaluate_pairs_per_channel_and_realblur() -> None:
    target = _photo(3, 64)
    pred = _degrade(target, 4)
    per_channel = evaluate_pairs([("x", pred, target)], ssim_mode="per_channel")
    assert per_channel.rows[0].ssim == pytest.approx(metrics.ssim(pred, target, "per_channel"), abs=1e-12)
    assert per_channel.ssim_mode == "per_channel"

    realblur = evaluate_pairs([("x", pred, target)], protocol="realblur")
    assert realblur.ssim_mode == "realblur"
    assert realblur.rows[0].psnr == pytest.approx(metrics.realblur_scores(pred, target)[0], abs=1e-9)


def test_size_mismatch_names_the_image() -> None:
    target = _photo(0, 48)
    with pytest.raises(ValueError, match="^frame7: "):
        evaluate_pairs([("frame7", target[:40], target)])


def test_cli_writes_csv_and_json(folders: Folders, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, target_dir, images = folders
    csv_path, json_path = tmp_path / "out" / "scores.csv", tmp_path / "out" / "scores.json"
    outputs = ["--csv", str(csv_path), "--json", str(json_path)]
    code = main([str(pred_dir), str(target_dir), *outputs, "--compare", "GoPro", "--no-progress"])
    assert code == 0
    with csv_path.open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["name"] for row in rows] == sorted(images)
    pred, target = images[rows[0]["name"]]
    assert float(rows[0]["psnr"]) == pytest.approx(metrics.psnr(pred, target), abs=1e-5)
    summary = json.loads(json_path.read_text())
    assert summary["images"] == 3 and summary["protocol"] == "gopro"
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "33.33" in printed  # the paper's GoPro PSNR for --compare


def test_cli_refuses_mismatched_folders_naming_the_files(folders: Folders, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, target_dir, _ = folders
    (target_dir / "scene1-002.png").unlink()
    _write(target_dir / "scene3-001.png", _photo(9))
    assert main([str(pred_dir), str(target_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "scene1-002.png" in err and "scene3-001.png" in err


def test_cli_refuses_corrupt_image_and_bad_options(folders: Folders, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, target_dir, _ = folders
    (pred_dir / "scene2-001.png").write_bytes(b"\x89PNG broken")
    assert main([str(pred_dir), str(target_dir), "--no-progress"]) == 2
    assert "scene2-001.png" in capsys.readouterr().err
    assert main([str(pred_dir), str(target_dir), "--protocol", "realblur", "--ssim", "matlab"]) == 2
    assert main([str(pred_dir), str(pred_dir.parent / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_module_entry_point(folders: Folders) -> None:
    pred_dir, target_dir, _ = folders
    done = subprocess.run(
        [sys.executable, "-m", "hidiff.evaluate", str(pred_dir), str(target_dir), "--no-progress"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "3 images" in done.stdout


def test_paper_results_table() -> None:
    assert PAPER_RESULTS == {
        "GoPro": (33.33, 0.964),
        "HIDE": (31.46, 0.945),
        "RealBlur-J": (33.70, 0.941),
        "RealBlur-R": (41.01, 0.978),
    }
