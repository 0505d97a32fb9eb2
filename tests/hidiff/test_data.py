"""Paired datasets (pairing by name and its errors, benchmark layouts), augmentation, progressive
learning, synthetic blur."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hidiff.data import (
    FlipRotate,
    PairedFolder,
    PairedImages,
    PairingError,
    ProgressiveSchedule,
    dihedral,
    gopro_pairs,
    hide_pairs,
    realblur_pairs,
    synthetic_blur,
)
from hidiff.data.synthetic_blur import BlurRecipe, blur_image, make_pairs, sample_kernel


def _image(seed: int, height: int = 24, width: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _folders(
    tmp_path: Path, blur_names: list[str], sharp_names: list[str], size: tuple[int, int] = (24, 32)
) -> tuple[Path, Path]:
    for index, name in enumerate(blur_names):
        _write(tmp_path / "blur" / name, _image(index, *size))
    for index, name in enumerate(sharp_names):
        _write(tmp_path / "sharp" / name, _image(100 + index, *size))
    return tmp_path / "blur", tmp_path / "sharp"


# --------------------------------------------------------------------------------------------
# PairedFolder
# --------------------------------------------------------------------------------------------


def test_paired_folder_pairs_by_name_and_serves_rgb_tensors(tmp_path: Path) -> None:
    blur_dir, sharp_dir = _folders(tmp_path, ["b.png", "a.png"], ["a.png", "b.png"])
    # A pure red pixel written by OpenCV (BGR on disk) must come back as channel 0 (RGB).
    red = np.zeros((24, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    _write(blur_dir / "a.png", red)

    dataset = PairedFolder(blur_dir, sharp_dir)
    assert len(dataset) == 2
    item = dataset[0]
    assert item["name"] == "a"
    assert item["blur"].shape == item["sharp"].shape == (3, 24, 32)
    assert item["blur"].dtype == torch.float32
    assert torch.all(item["blur"][0] == 1.0) and torch.all(item["blur"][1:] == 0.0)
    expected_sharp = torch.from_numpy(_image(100).transpose(2, 0, 1).astype(np.float32) / 255)
    assert torch.equal(item["sharp"], expected_sharp)


def test_missing_partner_is_named(tmp_path: Path) -> None:
    blur_dir, sharp_dir = _folders(tmp_path, ["a.png", "b.png", "c.png"], ["a.png", "c.png", "d.png"])
    with pytest.raises(PairingError) as info:
        PairedFolder(blur_dir, sharp_dir)
    message = str(info.value)
    assert "b.png" in message and "d.png" in message


def test_empty_or_missing_folder_is_an_error(tmp_path: Path) -> None:
    blur_dir, _ = _folders(tmp_path, ["a.png"], [])
    (tmp_path / "sharp").mkdir()
    with pytest.raises(PairingError, match="no images"):
        PairedFolder(blur_dir, tmp_path / "sharp")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        PairedFolder(blur_dir, tmp_path / "nowhere")


def test_corrupt_image_is_named_not_dropped(tmp_path: Path) -> None:
    blur_dir, sharp_dir = _folders(tmp_path, ["a.png", "b.png"], ["a.png", "b.png"])
    (blur_dir / "b.png").write_bytes(b"not a png at all")
    dataset = PairedFolder(blur_dir, sharp_dir)
    assert len(dataset) == 2
    dataset[0]
    with pytest.raises(ValueError, match="b.png"):
        dataset[1]


def test_image_smaller_than_patch_is_named(tmp_path: Path) -> None:
    blur_dir, sharp_dir = _folders(tmp_path, ["tiny.png"], ["tiny.png"], size=(20, 40))
    with pytest.raises(ValueError, match="tiny.png.*smaller than the 32x32"):
        PairedFolder(blur_dir, sharp_dir, patch_size=32)[0]


def test_size_mismatch_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "blur" / "a.png", _image(0, 24, 32))
    _write(tmp_path / "sharp" / "a.png", _image(1, 24, 30))
    with pytest.raises(ValueError, match="a.png"):
        PairedFolder(tmp_path / "blur", tmp_path / "sharp")[0]


def test_patches_are_cut_at_the_same_place_and_are_seeded(tmp_path: Path) -> None:
    image = _image(7, 48, 64)
    _write(tmp_path / "blur" / "x.png", image)
    _write(tmp_path / "sharp" / "x.png", image)
    dataset = PairedFolder(tmp_path / "blur", tmp_path / "sharp", patch_size=16, transform=FlipRotate(), seed=3)
    first = dataset[0]
    assert first["blur"].shape == (3, 16, 16)
    assert torch.equal(first["blur"], first["sharp"])  # same crop and same flip/rotation on both
    assert torch.equal(dataset[0]["blur"], first["blur"])  # same seed, epoch, index -> same patch
    crops = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        crops.add(dataset[0]["blur"].numpy().tobytes())
    assert len(crops) > 1


def test_dataloader_batches_patches(tmp_path: Path) -> None:
    blur_dir, sharp_dir = _folders(tmp_path, ["a.png", "b.png", "c.png"], ["a.png", "b.png", "c.png"])
    loader = torch.utils.data.DataLoader(PairedFolder(blur_dir, sharp_dir, patch_size=16, seed=0), batch_size=3)
    batch = next(iter(loader))
    assert batch["blur"].shape == (3, 3, 16, 16)
    assert batch["name"] == ["a", "b", "c"]


# --------------------------------------------------------------------------------------------
# Benchmark layouts
# --------------------------------------------------------------------------------------------


def test_gopro_prepared_layout(tmp_path: Path) -> None:
    for name in ("GOPR0384_11_00-000001.png", "GOPR0384_11_00-000002.png"):
        _write(tmp_path / "test" / "input" / name, _image(0))
        _write(tmp_path / "test" / "target" / name, _image(1))
    pairs = gopro_pairs(tmp_path, "test")
    assert [p.name for p in pairs] == ["GOPR0384_11_00-000001", "GOPR0384_11_00-000002"]
    assert pairs[0].blur == tmp_path / "test" / "input" / "GOPR0384_11_00-000001.png"


def test_gopro_download_layout_names_scene_and_frame(tmp_path: Path) -> None:
    for scene in ("GOPR0372_07_00", "GOPR0374_11_00"):
        for folder in ("blur", "blur_gamma", "sharp"):
            _write(tmp_path / "train" / scene / folder / "000047.png", _image(0))
    pairs = gopro_pairs(tmp_path, "train")
    assert [p.name for p in pairs] == ["GOPR0372_07_00-000047", "GOPR0374_11_00-000047"]
    assert pairs[0].blur.parent.name == "blur" and pairs[0].sharp.parent.name == "sharp"
    assert gopro_pairs(tmp_path, "train", use_gamma=True)[0].blur.parent.name == "blur_gamma"

    _write(tmp_path / "train" / "GOPR0374_11_00" / "blur" / "000048.png", _image(0))
    with pytest.raises(PairingError, match="000048.png"):
        gopro_pairs(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="test"):
        gopro_pairs(tmp_path, "test")


def test_hide_download_layout_with_and_without_list(tmp_path: Path) -> None:
    dataset = tmp_path / "HIDE_dataset"
    _write(dataset / "test" / "test-close-ups" / "1fromGOPR0950.png", _image(0))
    _write(dataset / "test" / "test-long-shot" / "2fromGOPR1096.png", _image(1))
    for name in ("1fromGOPR0950.png", "2fromGOPR1096.png", "9fromGOPR0001.png"):
        _write(dataset / "GT" / name, _image(2))
    pairs = hide_pairs(tmp_path)  # the parent of HIDE_dataset is accepted too
    assert [p.name for p in pairs] == ["1fromGOPR0950", "2fromGOPR1096"]
    assert pairs[1].sharp == dataset / "GT" / "2fromGOPR1096.png"

    (dataset / "test.txt").write_text("2fromGOPR1096.png\n")
    assert [p.name for p in hide_pairs(dataset)] == ["2fromGOPR1096"]
    (dataset / "test.txt").write_text("2fromGOPR1096.png\n7fromGOPR0002.png\n")
    with pytest.raises(PairingError, match="7fromGOPR0002"):
        hide_pairs(dataset)


def test_hide_prepared_layout(tmp_path: Path) -> None:
    _write(tmp_path / "input" / "a.png", _image(0))
    _write(tmp_path / "target" / "a.png", _image(1))
    assert [p.name for p in hide_pairs(tmp_path)] == ["a"]


def test_realblur_list_file(tmp_path: Path) -> None:
    base = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref"
    for scene, index in (("scene050", 6), ("scene230", 1)):
        _write(tmp_path / base / scene / "gt" / f"gt_{index}.png", _image(0))
        _write(tmp_path / base / scene / "blur" / f"blur_{index}.png", _image(1))
    (tmp_path / "RealBlur_J_test_list.txt").write_text(
        f"{base}/scene050/gt/gt_6.png {base}/scene050/blur/blur_6.png\n\n"
        f"{base}/scene230/gt/gt_1.png\t{base}/scene230/blur/blur_1.png\n"
    )
    pairs = realblur_pairs(tmp_path, "RealBlur_J_test_list.txt")
    assert [p.name for p in pairs] == ["scene050-6", "scene230-1"]
    assert pairs[0].sharp.name == "gt_6.png" and pairs[0].blur.name == "blur_6.png"
    assert len(PairedImages(pairs)) == 2

    (tmp_path / "bad_list.txt").write_text(f"{base}/scene050/gt/gt_6.png {base}/scene050/blur/blur_7.png\n")
    with pytest.raises(PairingError, match="blur_7.png"):
        realblur_pairs(tmp_path, tmp_path / "bad_list.txt")


# --------------------------------------------------------------------------------------------
# Augmentation and progressive learning
# --------------------------------------------------------------------------------------------


def test_dihedral_gives_the_eight_distinct_symmetries() -> None:
    image = np.arange(2 * 2 * 1).reshape(2, 2, 1)
    outputs = {dihedral(image, mode).tobytes() for mode in range(8)}
    assert len(outputs) == 8
    assert np.array_equal(dihedral(image, 0), image)
    assert np.array_equal(dihedral(image, 1), np.flipud(image))
    assert np.array_equal(dihedral(image, 2), np.rot90(image))


def test_flip_rotate_applies_one_transform_to_both_and_is_seeded() -> None:
    image = _image(0, 8, 8)
    seen = set()
    for seed in range(40):
        blur, sharp = FlipRotate()(image, image.copy(), torch.Generator().manual_seed(seed))
        assert np.array_equal(blur, sharp)
        again, _ = FlipRotate()(image, image, torch.Generator().manual_seed(seed))
        assert np.array_equal(blur, again)
        seen.add(blur.tobytes())
    assert len(seen) == 8


def test_progressive_schedule_matches_official_stages() -> None:
    schedule = ProgressiveSchedule()  # GoPro_S2.yml: iters, gt_sizes, mini_batch_sizes
    assert schedule.total_iters == 300000
    assert (schedule.max_patch_size, schedule.max_batch_size) == (384, 16)
    assert schedule.stage_at(1) == (128, 16)
    assert schedule.stage_at(20000) == (128, 16)
    assert schedule.stage_at(20001) == (160, 10)
    assert schedule.stage_at(60000) == (192, 8)
    assert schedule.stage_at(80001) == (320, 2)
    assert schedule.stage_at(100001) == (384, 2)
    assert schedule.stage_at(300000) == (384, 2)
    assert schedule.stage_at(400000) == (384, 2)
    options = {"iters": [10, 10], "gt_sizes": [8, 16], "mini_batch_sizes": [4, 2]}
    assert ProgressiveSchedule.from_options(options) == ProgressiveSchedule((10, 10), (8, 16), (4, 2))
    with pytest.raises(ValueError, match="one iters"):
        ProgressiveSchedule((10,), (8, 16), (4, 2))
    with pytest.raises(ValueError, match="counted from 1"):
        schedule.stage_at(0)


def test_progressive_crop_batch_subsamples_and_crops_consistently() -> None:
    schedule = ProgressiveSchedule(iters=(5, 5), patch_sizes=(8, 16), batch_sizes=(3, 6))
    blur = torch.rand(6, 3, 16, 16)
    sharp = blur.clone()
    small_blur, small_sharp = schedule.crop_batch(blur, sharp, iteration=2, generator=torch.Generator().manual_seed(0))
    assert small_blur.shape == (3, 3, 8, 8)
    assert torch.equal(small_blur, small_sharp)
    # Every kept sample is a window of a distinct loaded sample.
    def source_of(patch: torch.Tensor) -> int:
        windows = [(top, left) for top in range(9) for left in range(9)]
        matches = [i for i in range(6)
                   if any(torch.equal(patch, blur[i, :, top : top + 8, left : left + 8]) for top, left in windows)]
        return matches[0]

    sources = {source_of(patch) for patch in small_blur}
    assert len(sources) == 3
    again, _ = schedule.crop_batch(blur, sharp, iteration=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, small_blur)
    full, _ = schedule.crop_batch(blur, sharp, iteration=7)
    assert full.shape == (6, 3, 16, 16)
    with pytest.raises(ValueError, match="max_patch_size"):
        schedule.crop_batch(blur[..., :8, :8], sharp[..., :8, :8], iteration=7)


# --------------------------------------------------------------------------------------------
# Synthetic blur
# --------------------------------------------------------------------------------------------


def _laplacian_variance(rgb: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


@pytest.fixture(scope="module")
def photos() -> list[tuple[str, np.ndarray]]:
    pytest.importorskip("skimage")
    return synthetic_blur.skimage_sharp_images()


def test_skimage_photos_are_rgb_uint8(photos: list[tuple[str, np.ndarray]]) -> None:
    assert [name for name, _ in photos] == list(synthetic_blur.SKIMAGE_PHOTOS)
    for name, image in photos:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert min(image.shape[:2]) >= 256, name


@pytest.mark.parametrize("size", [7, 15, 31])
def test_sample_kernel_is_a_centred_normalised_psf(size: int) -> None:
    kernel = sample_kernel(np.random.default_rng(size), size)
    assert kernel.shape == (size, size) and kernel.dtype == np.float32
    assert kernel.min() >= 0 and kernel.sum() == pytest.approx(1.0, abs=1e-5)
    ys, xs = np.mgrid[0:size, 0:size]
    centre = (size - 1) / 2
    assert (kernel * ys).sum() == pytest.approx(centre, abs=1e-3)
    assert (kernel * xs).sum() == pytest.approx(centre, abs=1e-3)
    assert np.count_nonzero(kernel) > 4  # a trajectory, not a delta
    with pytest.raises(ValueError, match="odd"):
        sample_kernel(np.random.default_rng(0), 8)


@pytest.mark.parametrize("size", [11, 21])
def test_line_kernel_is_a_centred_straight_segment(size: int) -> None:
    """All the mass lies within a pixel of one straight line through the centre."""
    kernel = sample_kernel(np.random.default_rng(size), size, "line")
    assert kernel.shape == (size, size) and kernel.min() >= 0 and kernel.sum() == pytest.approx(1.0, abs=1e-5)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    centre = (size - 1) / 2
    assert (kernel * ys).sum() == pytest.approx(centre, abs=1e-3)
    assert (kernel * xs).sum() == pytest.approx(centre, abs=1e-3)
    # Principal axis of the mass: the spread across it is bilinear splatting only (< 1 px).
    dy, dx = ys - centre, xs - centre
    cov = np.array([[(kernel * dx * dx).sum(), (kernel * dx * dy).sum()], [(kernel * dx * dy).sum(), (kernel * dy * dy).sum()]])
    across, along = np.linalg.eigvalsh(cov)
    assert across < 0.25 and along > 4 * across
    assert np.sqrt(3 * along) >= 0.4 * (centre - 1) - 1  # half-length of a uniform segment: 40-100 % of the box
    shake = sample_kernel(np.random.default_rng(size), size)
    assert not np.allclose(shake, kernel)
    with pytest.raises(ValueError, match="kernel shape must be one of shake, line"):
        sample_kernel(np.random.default_rng(0), size, "disc")


def test_blur_image_is_deterministic_and_lowers_sharpness(photos: list[tuple[str, np.ndarray]]) -> None:
    sharp = photos[0][1][60:188, 160:288]  # the astronaut's face and badge: plenty of detail
    kernel = sample_kernel(np.random.default_rng(5), 15)
    first = blur_image(sharp, kernel, np.random.default_rng(1), noise_sigma=0.005, jpeg_quality=90, shot_noise=0.0005)
    second = blur_image(sharp, kernel, np.random.default_rng(1), noise_sigma=0.005, jpeg_quality=90, shot_noise=0.0005)
    assert first.shape == sharp.shape and first.dtype == np.uint8
    assert np.array_equal(first, second)
    assert _laplacian_variance(first) < 0.5 * _laplacian_variance(sharp)
    clean = blur_image(sharp, kernel, np.random.default_rng(1))
    assert _laplacian_variance(clean) < 0.2 * _laplacian_variance(sharp)
    assert not np.array_equal(clean, first)


def test_make_pairs_is_deterministic_and_readable(tmp_path: Path, photos: list[tuple[str, np.ndarray]]) -> None:
    chosen = photos[:2]
    pairs = make_pairs(chosen, tmp_path / "one", per_image=2, seed=4, crop=48)
    make_pairs(chosen, tmp_path / "two", per_image=2, seed=4, crop=48)
    make_pairs(chosen, tmp_path / "other", per_image=2, seed=5, crop=48)
    assert [p.name for p in pairs] == ["astronaut_000", "astronaut_001", "chelsea_000", "chelsea_001"]
    for pair in pairs:
        twin = tmp_path / "two" / "input" / pair.blur.name
        assert pair.blur.read_bytes() == twin.read_bytes()
    assert any(
        p.blur.read_bytes() != (tmp_path / "other" / "input" / p.blur.name).read_bytes() for p in pairs
    )
    manifest = json.loads((tmp_path / "one" / "pairs.json").read_text())
    assert manifest["seed"] == 4 and len(manifest["pairs"]) == 4
    assert all(7 <= record["kernel_size"] <= 31 and record["kernel_size"] % 2 for record in manifest["pairs"])

    dataset = PairedFolder(tmp_path / "one" / "input", tmp_path / "one" / "target")
    item = dataset[0]
    assert item["blur"].shape == (3, 48, 48)
    blurry = (item["blur"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    sharp = (item["sharp"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert _laplacian_variance(blurry) < _laplacian_variance(sharp)
    assert not list((tmp_path / "one" / "input").glob(".*"))  # no temporary files left behind


def test_synthetic_blur_cli_holds_out_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "photos"
    for index, name in enumerate(("alpha", "beta", "gamma")):
        _write(source / f"{name}.png", _image(index, 40, 40))
    out = tmp_path / "synthetic"
    arguments = ["--per-image", "2", "--holdout", "beta,gamma", "--source", str(source), "--crop", "32"]
    code = synthetic_blur.main([str(out), *arguments])
    assert code == 0
    train = sorted(p.name for p in (out / "train" / "input").iterdir())
    test = sorted(p.name for p in (out / "test" / "target").iterdir())
    assert train == ["alpha_000.png", "alpha_001.png"]
    assert test == ["beta_000.png", "beta_001.png", "gamma_000.png", "gamma_001.png"]

    code = synthetic_blur.main([str(out), "--holdout", "delta", "--source", str(source)])
    assert code == 2
    assert "delta" in capsys.readouterr().err

    lines = tmp_path / "lines"
    code = synthetic_blur.main([str(lines), *arguments, "--kernel-shape", "line", "--kernel-sizes", "9", "13"])
    assert code == 0
    records = json.loads((lines / "train" / "pairs.json").read_text())["pairs"]
    assert {r["kernel_shape"] for r in records} == {"line"} and all(9 <= r["kernel_size"] <= 13 for r in records)


def test_recipe_validation() -> None:
    with pytest.raises(ValueError, match="kernel_sizes"):
        BlurRecipe(kernel_sizes=(9, 7))
    with pytest.raises(ValueError, match="jpeg_quality"):
        BlurRecipe(jpeg_quality=(90, 120))
    with pytest.raises(ValueError, match="kernel_shape must be one of shake, line, got 'disc'"):
        BlurRecipe(kernel_shape="disc")
