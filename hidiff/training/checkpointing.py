"""Training checkpoints that resume bit-identically.

One ``.pt`` file per checkpoint, ``OUT/checkpoints/iter_0001000.pt``, holding only tensors and
plain containers so that it loads with ``torch.load(..., weights_only=True)``:

    format, stage, iteration, elapsed_s, config (the run configuration as a dict),
    model (HIDiff state dict), optimizer, scheduler (state dicts),
    data (seed, samples_consumed, world_size: the position in the sample stream),
    rng (torch CPU, CUDA, numpy and python ``random`` states, as tensors)

Written under a temporary name in the same folder and renamed, so a crash never leaves half a file.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hidiff.files import atomic_path

FORMAT = "hidiff-train/1"
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^iter_(\d+)\.pt$")


# --------------------------------------------------------------------------------------------
# Random number generator states as tensors
# --------------------------------------------------------------------------------------------


def capture_rng(device: torch.device) -> dict[str, Any]:
    """The global generators' states: torch CPU, CUDA (``device``'s, when CUDA), numpy, python."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR


def checkpoint_path(out_dir: str | Path, iteration: int) -> Path:
    return checkpoint_dir(out_dir) / f"iter_{iteration:07d}.pt"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every checkpoint under OUT/checkpoints, oldest first."""
    folder = checkpoint_dir(out_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def find_latest(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save through :func:`hidiff.files.atomic_path` (temporary name, fsync, rename)."""
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)


def prune(out_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for _, path in list_checkpoints(out_dir)[:-keep]:
        path.unlink(missing_ok=True)


def save_checkpoint(
    out_dir: str | Path,
    *,
    stage: int,
    iteration: int,
    elapsed_s: float,
    config: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: dict[str, int],
    device: torch.device,
    keep: int,
) -> Path:
    """Write OUT/checkpoints/iter_N.pt (atomically) and prune older ones; returns the path."""
    state = {
        "format": FORMAT,
        "stage": stage,
        "iteration": iteration,
        "elapsed_s": float(elapsed_s),
        "config": config,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "data": dict(data),
        "rng": capture_rng(device),
    }
    path = checkpoint_path(out_dir, iteration)
    save_atomic(state, path)
    prune(out_dir, keep)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights_only: it cannot run code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several error types for damaged or foreign files
        raise ValueError(f"{path} is not a readable training checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: format {got!r}, expected {FORMAT!r} (a checkpoint written by hidiff.train)")
    return state


def resolve_resume(resume: str, out_dir: str | Path) -> Path | None:
    """``--resume`` argument -> checkpoint path. "auto": the newest under OUT/checkpoints, or None."""
    if resume == "auto":
        return find_latest(out_dir)
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint file (use 'auto' for the newest in {checkpoint_dir(out_dir)})")
    return path
