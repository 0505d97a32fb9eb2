"""Weights shipped inside the package."""
from __future__ import annotations

from pathlib import Path

DEFAULT_WEIGHTS = Path(__file__).with_name("default.safetensors")


def default_weights_path() -> Path:
    if not DEFAULT_WEIGHTS.is_file():
        raise FileNotFoundError(
            f"the embedded default model {DEFAULT_WEIGHTS} is missing; reinstall the package "
            "or pass your own weights (--weights FILE, or the official --net-g/--net-le-dm/--net-d files)"
        )
    return DEFAULT_WEIGHTS
