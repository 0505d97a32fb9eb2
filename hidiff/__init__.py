"""HI-Diff in PyTorch: the model, its configuration, checkpoints and (in submodules) training and evaluation.

The names below are imported on first use, so that ``import hidiff.files`` (the atomic writes
every package uses) does not load the model.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hidiff.config import HIDiffConfig, from_official_options, preset
    from hidiff.model import HIDiff
    from hidiff.schedule import DiffusionSchedule

__all__ = ["HIDiff", "HIDiffConfig", "DiffusionSchedule", "from_official_options", "preset", "default_model"]

_HOMES = {"HIDiff": "hidiff.model", "HIDiffConfig": "hidiff.config", "from_official_options": "hidiff.config",
          "preset": "hidiff.config", "DiffusionSchedule": "hidiff.schedule"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'hidiff' has no attribute {name!r}")


def default_model() -> "HIDiff":
    """The small demonstration model shipped inside the package (docs/default-model.md describes it)."""
    from hidiff.model import HIDiff
    from hidiff.weights import default_weights_path

    return HIDiff.load(default_weights_path())
