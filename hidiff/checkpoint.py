"""Checkpoint I/O: the official ``.pth`` release files and our own safetensors format.

Official files hold a state dict under ``params`` (BasicSR's ``save_network``) or a bare state
dict; they are read with ``torch.load(..., weights_only=True)`` so a file cannot run code.
Our format is one safetensors file with the model configuration embedded in its metadata,
written under a temporary name and renamed.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

FORMAT = "hidiff-deploy/1"


class CheckpointMismatch(ValueError):
    """A state dict does not fit the network: lists missing, unexpected and mis-shaped keys."""


def read_official(path: str | Path, param_key: str = "params") -> dict[str, torch.Tensor]:
    """The state dict of one official release file (``net_g.pth`` ...)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoints; report them as one
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    if isinstance(data, Mapping) and param_key in data and isinstance(data[param_key], Mapping):
        data = data[param_key]
    elif isinstance(data, Mapping) and "params_ema" in data and isinstance(data["params_ema"], Mapping):
        data = data["params_ema"]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path}: expected a state dict (optionally under {param_key!r}), got {type(data).__name__}")
    # DDP-wrapped saves carry a "module." prefix.
    return {k.removeprefix("module."): v for k, v in data.items()}


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module``; any missing, unexpected or mis-shaped key is an error
    that names every offending key."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or misshaped:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointMismatch(
            f"{what} does not fit the network configuration; " + "; ".join(parts)
            + ". Check that the options (preset or option file) match the checkpoint."
        )
    module.load_state_dict(state, strict=True)


def save_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, object]) -> None:
    """Write tensors and JSON-serialisable metadata atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Tensors and decoded metadata of a file written by :func:`save_safetensors`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path}: format {raw.get('format')!r}, expected {FORMAT!r} (a file written by HIDiff.save)")
    meta = {k: json.loads(v) for k, v in raw.items() if k != "format"}
    return tensors, meta
