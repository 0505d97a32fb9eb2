"""bench/accuracy.py on a generated three-image paired folder (tiny random model, CPU)."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from bench import accuracy, inputs
from hidiff.evaluate import evaluate_folders


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """blur/ and sharp/ folders with three natural images of different sizes, and tiny weights."""
    from skimage import data as skimage_data

    root = tmp_path_factory.mktemp("paired")
    (root / "blur").mkdir()
    (root / "sharp").mkdir()
    for name, size in (("astronaut", (40, 32)), ("chelsea", (36, 28)), ("coffee", (48, 24))):
        rgb = cv2.resize(getattr(skimage_data, name)(), size, interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(root / "sharp" / f"{name}.png"), bgr)
        cv2.imwrite(str(root / "blur" / f"{name}.png"), cv2.GaussianBlur(bgr, (5, 5), 1.5))
    model, _ = inputs.load_model(inputs.ModelChoice(tiny=True), seed=0)
    model.save(root / "tiny.safetensors")
    return root


@pytest.fixture(scope="module")
def run(paired, tmp_path_factory):
    out = tmp_path_factory.mktemp("accuracy")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model runs fastest on one thread of a busy CI machine
    try:
        code = accuracy.main([str(paired / "blur"), str(paired / "sharp"), "--backend", "torch-fp32", "--device", "cpu",
                              "--weights", str(paired / "tiny.safetensors"), "--expect", "GoPro", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return code, out


def test_writes_images_csv_and_means(run, paired):
    code, out = run
    assert code == 0
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == ["astronaut.png", "chelsea.png", "coffee.png"]
    for name in images:
        saved = cv2.imread(str(out / "images" / name))
        target = cv2.imread(str(paired / "sharp" / name))
        assert saved is not None and target is not None
        assert saved.shape == target.shape and saved.dtype == np.uint8
    with open(out / "scores.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [r["name"] for r in rows] == ["astronaut", "chelsea", "coffee"]
    summary = json.loads((out / "accuracy.json").read_text())
    assert summary["images"] == 3
    assert summary["mean_psnr"] == pytest.approx(np.mean([float(r["psnr"]) for r in rows]), abs=1e-5)
    assert summary["mean_ssim"] == pytest.approx(np.mean([float(r["ssim"]) for r in rows]), abs=1e-7)
    assert all(float(r["deblur_ms"]) > 0 for r in rows)


def test_scores_are_those_of_the_saved_images(run, paired):
    _, out = run
    result = evaluate_folders(out / "images", paired / "sharp", progress=False)
    with open(out / "scores.csv", newline="") as stream:
        rows = {r["name"]: r for r in csv.DictReader(stream)}
    for score in result.rows:
        assert float(rows[score.name]["psnr"]) == pytest.approx(score.psnr, abs=1e-5)


def test_paper_comparison(run):
    _, out = run
    summary = json.loads((out / "accuracy.json").read_text())
    paper = summary["paper"]
    assert (paper["dataset"], paper["paper_psnr"], paper["paper_ssim"]) == ("GoPro", 33.33, 0.964)
    assert paper["psnr_difference"] == pytest.approx(summary["mean_psnr"] - 33.33)


def test_output_equals_the_runtime_on_the_same_frame(run, paired):
    """The saved PNG is what runtime.Deblurrer gives for the frame (same model, seed 0)."""
    from hidiff.model import HIDiff
    from runtime import Deblurrer

    _, out = run
    with Deblurrer(model=HIDiff.load(paired / "tiny.safetensors"), device="cpu", seed=0) as deblurrer:
        expected = deblurrer.deblur(cv2.imread(str(paired / "blur" / "chelsea.png")))
    saved = cv2.imread(str(out / "images" / "chelsea.png"))
    assert saved is not None and np.array_equal(saved, expected)


def test_missing_partner_exits_2(paired, tmp_path, capsys):
    (tmp_path / "blur").mkdir()
    cv2.imwrite(str(tmp_path / "blur" / "lonely.png"), np.zeros((16, 16, 3), np.uint8))
    code = accuracy.main([str(tmp_path / "blur"), str(paired / "sharp"), "--tiny", "--device", "cpu",
                          "--out", str(tmp_path / "out")])
    assert code == 2
    assert "lonely" in capsys.readouterr().err
