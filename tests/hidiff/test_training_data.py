"""hidiff.training.data: the sample order is DistributedSampler's, the stream is a function of
(seed, samples consumed) only, whatever the number of workers, and bad files are named."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

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
from training_helpers import write_pairs


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
