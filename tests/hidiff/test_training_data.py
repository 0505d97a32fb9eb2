"""hidiff.training.data: the sample order is DistributedSampler's, the stream is a function of
(seed, samples consumed) only, whatever the number of workers, and bad files are named."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler
from training_helpers import write_pairs

from hidiff.data.paired import folder_pairs
from hidiff.training.config import DataConfig, PairFolders, SyntheticConfig
from hidiff.training.data import (
    BatchStream,
    FolderTrainPairs,
    ResumableSampler,
    SyntheticTrainPairs,
    build_train_dataset,
    synthetic_photos,
)


@pytest.mark.parametrize("length, world_size", [(7, 1), (7, 2), (8, 3)])
def test_epoch_order_is_distributed_samplers(length: int, world_size: int) -> None:
    for rank in range(world_size):
        ours = ResumableSampler(length, seed=5, rank=rank, world_size=world_size)
        for epoch in (0, 3):
            reference = DistributedSampler(range(length), num_replicas=world_size, rank=rank, shuffle=True, seed=5)
            reference.set_epoch(epoch)
            assert ours.epoch_indices(epoch) == list(reference)


def test_sampler_resumes_mid_stream_across_epochs() -> None:
    full = iter(ResumableSampler(5, seed=1, patch=32))
    stream = [next(full) for _ in range(13)]
    resumed = iter(ResumableSampler(5, seed=1, start=4, patch=32))
    assert [next(resumed) for _ in range(9)] == stream[4:]
    assert stream[5][0] == 1 and stream[10][0] == 2  # (epoch, index, patch) keys, epochs of 5


def test_items_depend_only_on_their_key(tmp_path: Path) -> None:
    dataset = FolderTrainPairs(folder_pairs(*(write_pairs(tmp_path, 3) / s for s in ("input", "target"))), seed=0)
    a, b = dataset[(0, 1, 32)], dataset[(0, 1, 32)]
    assert a["blur"].shape == (3, 32, 32) and a["blur"].dtype == torch.float32
    assert torch.equal(a["blur"], b["blur"]) and torch.equal(a["sharp"], b["sharp"])
    assert not torch.equal(a["sharp"], dataset[(1, 1, 32)]["sharp"])  # another epoch, another crop


def test_stream_is_independent_of_workers_and_resumable(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, 5)
    dataset = build_train_dataset(DataConfig(train=(PairFolders(str(root / "input"), str(root / "target")),)), seed=3)
    plan = [(32, 2), (32, 2), (40, 1), (40, 1), (40, 1)]  # a progressive stage change in the middle
    straight = BatchStream(dataset, seed=3)
    expected = [straight.next_batch(p, b) for p, b in plan]
    assert straight.samples_consumed == 7

    with_worker = BatchStream(dataset, seed=3, num_workers=1)
    got = [with_worker.next_batch(p, b) for p, b in plan]
    with_worker.close()
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(expected, got))

    resumed = BatchStream(dataset, seed=3, samples_consumed=4)
    for (p, b), (blur, sharp) in zip(plan[2:], expected[2:]):
        r_blur, r_sharp = resumed.next_batch(p, b)
        assert torch.equal(r_blur, blur) and torch.equal(r_sharp, sharp)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, 2)
    (root / "input" / "img1.png").write_bytes(b"not a png")
    pairs = folder_pairs(root / "input", root / "target")
    with pytest.raises(ValueError, match="img1.png"):
        FolderTrainPairs(pairs, seed=0, cache=True)
    dataset = FolderTrainPairs(pairs, seed=0)
    with pytest.raises(ValueError, match="img1.png"):
        dataset[(0, 1, 32)]
    with pytest.raises(ValueError, match=r"img0\.png.*smaller than the 64x64"):
        dataset[(0, 0, 64)]


def test_synthetic_source_holds_out_photos_and_is_deterministic(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        cv2.imwrite(str(photos / f"{name}.png"), (rng.random((80, 90, 3)) * 255).astype(np.uint8))
    cfg = SyntheticConfig(source=str(photos), holdout=("b",), epoch_length=4)
    assert [name for name, _ in synthetic_photos(cfg)] == ["a", "c"]
    dataset = build_train_dataset(DataConfig(synthetic=cfg), seed=1)
    assert isinstance(dataset, SyntheticTrainPairs) and len(dataset) == 4
    x, y = dataset[(0, 2, 48)], dataset[(0, 2, 48)]
    assert x["blur"].shape == (3, 48, 48) and torch.equal(x["blur"], y["blur"])
    assert not torch.equal(x["blur"], x["sharp"])  # blurred
    with pytest.raises(ValueError, match="not among the images"):
        synthetic_photos(SyntheticConfig(source=str(photos), holdout=("rocket",)))


def _photo(size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _offsets_of(patch: np.ndarray, image: np.ndarray) -> list[tuple[int, int]]:
    size = patch.shape[0]
    return [(y, x) for y in range(image.shape[0] - size + 1) for x in range(image.shape[1] - size + 1)
            if np.array_equal(image[y:y + size, x:x + size], patch)]


def _sharp_hwc(item: dict[str, torch.Tensor]) -> np.ndarray:
    return (item["sharp"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_rescale_crops_the_photo_downscaled_and_never_below_the_patch() -> None:
    photo = _photo(128)
    dataset = SyntheticTrainPairs([("p", photo)], length=8, seed=0, flip_rotate=False, rescale=(0.5, 0.5))
    half = cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA)
    for index in range(3):
        assert len(_offsets_of(_sharp_hwc(dataset[(0, index, 48)]), half)) == 1
    # 0.5 x 128 = 64 < 100: the scale rises to 100/128, so the patch is the whole downscaled photo.
    clamped = cv2.resize(photo, (100, 100), interpolation=cv2.INTER_AREA)
    assert np.array_equal(_sharp_hwc(dataset[(0, 0, 100)]), clamped)
    unscaled = SyntheticTrainPairs([("p", photo)], length=8, seed=0, flip_rotate=False)
    assert len(_offsets_of(_sharp_hwc(unscaled[(0, 0, 48)]), photo)) == 1


def test_channel_shuffle_permutes_the_colours_of_each_sample() -> None:
    photo = np.zeros((64, 64, 3), np.uint8)
    photo[..., 0], photo[..., 1], photo[..., 2] = 20, 120, 220
    dataset = SyntheticTrainPairs([("p", photo)], length=32, seed=0, channel_shuffle=True)
    orders = set()
    for index in range(16):
        item = dataset[(0, index, 32)]
        colours = tuple(int(v) for v in _sharp_hwc(item)[0, 0])
        assert sorted(colours) == [20, 120, 220]
        orders.add(colours)
        assert torch.equal(item["sharp"], dataset[(0, index, 32)]["sharp"])  # still a function of the key
    assert len(orders) >= 3
    plain = SyntheticTrainPairs([("p", photo)], length=32, seed=0)
    assert {tuple(int(v) for v in _sharp_hwc(plain[(0, i, 32)])[0, 0]) for i in range(8)} == {(20, 120, 220)}


@pytest.mark.parametrize("rescale", [(0.0, 1.0), (0.8, 0.5), (0.5, 1.5)])
def test_rescale_outside_downscaling_is_refused(rescale: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="data.synthetic.rescale"):
        SyntheticConfig(rescale=rescale)
