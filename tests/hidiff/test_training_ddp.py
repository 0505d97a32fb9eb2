"""Two-process DistributedDataParallel training on the CPU (gloo), as torchrun would start it:
both replicas end with identical weights, and only rank 0 writes the log and the files."""
from __future__ import annotations

import hashlib
import os
import socket
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.multiprocessing as mp
from conftest import tiny_config

WORLD_SIZE = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_pairs(root: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("input", "target"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k in range(count):
        sharp = cv2.GaussianBlur((rng.random((40, 48, 3)) * 255).astype(np.uint8), (0, 0), 1.0)
        cv2.imwrite(str(root / "target" / f"img{k}.png"), sharp)
        cv2.imwrite(str(root / "input" / f"img{k}.png"), cv2.GaussianBlur(sharp, (0, 0), 2.0))
    return root


def state_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _replica(rank: int, raw: dict, port: int, out: str) -> None:
    # What torchrun sets for each process.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from hidiff.train import run
    from hidiff.training.config import run_config_from_dict

    result = run(run_config_from_dict(raw), progress=False)
    Path(out, f"hash{rank}.txt").write_text(state_hash(result.model))


def test_two_gloo_replicas_train_identical_weights(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data", 6)
    raw = {
        "model": tiny_config().to_dict(),
        "data": {"train": [{"input": str(data / "input"), "target": str(data / "target")}], "num_workers": 0},
        "train": {
            "stage": 1, "total_iter": 3, "device": "cpu", "out_dir": str(tmp_path / "out"), "log_every": 1,
            "checkpoint_every": 2, "progressive": {"iters": [3], "patch_sizes": [32], "batch_sizes": [2]},
            "optimizer": {"lr": 1e-3}, "scheduler": {"periods": [3], "restart_weights": [1.0], "eta_mins": [1e-5]},
        },
    }
    mp.spawn(_replica, args=(raw, free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)

    hashes = [(tmp_path / f"hash{r}.txt").read_text() for r in range(WORLD_SIZE)]
    assert hashes[0] == hashes[1]

    from hidiff.model import HIDiff
    from hidiff.training.log import LOG_NAME, read_log

    torch.manual_seed(100)
    untrained = HIDiff(tiny_config(), with_stage1_encoder=True)
    assert state_hash(untrained) != hashes[0]  # the replicas did train
    records = read_log(tmp_path / "out" / LOG_NAME)
    starts = [r for r in records if r["event"] == "start"]
    assert len(starts) == 1 and starts[0]["world_size"] == WORLD_SIZE  # rank 0 alone writes
    assert [r["iter"] for r in records if r["event"] == "train"] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["iter_0000002.pt", "iter_0000003.pt"]
    assert HIDiff.load(tmp_path / "out" / "model.safetensors") is not None


# The warning as PyTorch 2.11's reducer printed it in a DDP run on H200s (2026-11-27), and the same
# warning for a 3x3 kernel.
STRIDE_WARNING = (
    "Grad strides do not match bucket view strides. This may indicate grad was not created according to the "
    "gradient layout contract, or that the param's strides changed since DDP was constructed.  This is not an "
    "error, but may impair performance.\ngrad.sizes() = [{sizes}], strides() = [{grad}]\n"
    "bucket_view.sizes() = [{sizes}], strides() = [{bucket}] (Triggered internally at "
    "/pytorch/torch/csrc/distributed/c10d/reducer.cpp:332.)"
)


def test_only_the_spurious_1x1_stride_warning_is_silenced() -> None:
    from hidiff.training.distributed import ignore_spurious_stride_warnings

    spurious = STRIDE_WARNING.format(sizes="48, 127, 1, 1", grad="127, 1, 127, 127", bucket="127, 1, 1, 1")
    real = STRIDE_WARNING.format(sizes="768, 1, 5, 5", grad="25, 1, 5, 1", bucket="25, 25, 5, 1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ignore_spurious_stride_warnings()
        warnings.warn(spurious, UserWarning, stacklevel=1)
        warnings.warn(real, UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [real]
