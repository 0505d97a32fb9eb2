"""Checkpoint I/O: the official ``.pth`` release files and our own safetensors format.

Official files hold a state dict under ``params`` (BasicSR's ``save_network``) or a bare state
dict; they are read with ``torch.load(..., weights_only=True)`` so a file cannot run code.
Our format is one safetensors file with the model configuration embedded in its metadata,
written atomically (:func:`hidiff.files.atomic_path`). Its header (tensor names, shapes and the
metadata) is read on its own first, so that a file is checked before anything is allocated.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from hidiff.files import atomic_path

FORMAT = "hidiff-deploy/1"
# First bytes of the files torch.save writes: a zip archive (PyTorch >= 1.6) or a bare pickle.
_TORCH_SAVE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_FROM_OFFICIAL = ("For the official release files use HIDiff.from_official(net_g, net_le_dm, net_d, "
                  "options=OPTION_FILE) (the CLI's --net-g/--net-le-dm/--net-d/--options), then "
                  "model.save('hidiff.safetensors') once")


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


def shape_mismatches(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]],
                     what: str) -> CheckpointMismatch | None:
    """The error that lists every missing, unexpected and mis-shaped key of ``found`` against
    ``expected`` (``{name: shape}`` both), or None when they agree."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(found[k])} vs model {tuple(expected[k])}"
        for k in set(expected) & set(found)
        if tuple(found[k]) != tuple(expected[k])
    )
    if not (missing or unexpected or misshaped):
        return None
    parts = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped)):
        if keys:
            shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
            parts.append(f"{label}: {shown}")
    return CheckpointMismatch(
        f"{what} does not fit the network configuration; " + "; ".join(parts)
        + ". Check that the options (preset or option file) match the checkpoint."
    )


def state_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module``; any missing, unexpected or mis-shaped key is an error
    that names every offending key."""
    error = shape_mismatches(state_shapes(module), {k: tuple(v.shape) for k, v in state.items()}, what)
    if error is not None:
        raise error
    module.load_state_dict(state, strict=True)


def save_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, object]) -> None:
    """Write tensors and JSON-serialisable metadata atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    with atomic_path(path) as temporary:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(temporary), metadata=meta)


def _check_safetensors(path: Path) -> None:
    """FileNotFoundError, or ValueError for a PyTorch checkpoint given where our format is read
    (safetensors reports those as "header too large")."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_TORCH_SAVE_MAGIC):
        raise ValueError(f"{path} is a PyTorch checkpoint (torch.save), not a weights file written by HIDiff.save. "
                         + _FROM_OFFICIAL)


def read_safetensors_header(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, object]]:
    """The shape of every tensor and the decoded metadata of a file written by
    :func:`save_safetensors`, from the file's header alone: no tensor is read or allocated."""
    from safetensors import safe_open

    path = Path(path)
    _check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            shapes = {k: tuple(int(d) for d in f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        hint = f". {_FROM_OFFICIAL}" if path.suffix.lower() in (".pth", ".pt", ".ckpt") else ""
        raise ValueError(f"{path} is not a readable safetensors file: {exc}{hint}") from exc
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path}: format {raw.get('format')!r}, expected {FORMAT!r} (a file written by HIDiff.save)")
    try:
        meta = {k: json.loads(v) for k, v in raw.items() if k != "format"}
    except ValueError as exc:
        raise ValueError(f"{path}: its metadata is not the JSON HIDiff.save writes ({exc})") from exc
    return shapes, meta


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Tensors and decoded metadata of a file written by :func:`save_safetensors`. To check a
    file before its tensors are allocated, read :func:`read_safetensors_header` first."""
    from safetensors.torch import load_file

    _, meta = read_safetensors_header(path)
    try:
        return load_file(str(path)), meta
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
