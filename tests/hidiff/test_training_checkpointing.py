"""hidiff.training.checkpointing: RNG states survive as tensors, files load with weights_only,
are written atomically, pruned, and found by --resume auto."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hidiff.training import checkpointing


def draws() -> tuple[float, float, float]:
    return float(torch.rand(1)), float(np.random.rand()), random.random()


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    state = checkpointing.capture_rng(cpu)
    expected = draws()
    checkpointing.save_atomic(state, tmp_path / "rng.pt")
    draws()  # move every generator on
    checkpointing.restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), cpu)
    assert draws() == expected


def test_checkpoints_are_listed_pruned_and_resolved(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
    for iteration in (5, 10, 15):
        checkpointing.save_checkpoint(
            tmp_path, stage=1, iteration=iteration, elapsed_s=1.0, config={"model": {}}, model=model, optimizer=optimizer,
            scheduler=scheduler, data={"seed": 0, "samples_consumed": iteration, "world_size": 1},
            device=torch.device("cpu"), keep=2)
    assert [i for i, _ in checkpointing.list_checkpoints(tmp_path)] == [10, 15]
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    latest = checkpointing.resolve_resume("auto", tmp_path)
    assert latest == checkpointing.checkpoint_path(tmp_path, 15)
    state = checkpointing.load_checkpoint(latest)
    assert state["iteration"] == 15 and state["data"]["samples_consumed"] == 15
    assert torch.equal(state["model"]["weight"], model.weight.detach())
    assert checkpointing.resolve_resume("auto", tmp_path / "elsewhere") is None


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="hidiff-train/1"):
        checkpointing.load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable training checkpoint"):
        checkpointing.load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="auto"):
        checkpointing.resolve_resume(str(tmp_path / "missing.pt"), tmp_path)
