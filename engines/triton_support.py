"""What the Triton kernels of the PyTorch backend share: the optional Triton import, the autotuners'
on-disk cache, the dtypes the kernels take, the power-of-two block sizes, and the swap of a model's
modules for their fused forms."""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

try:  # Triton comes with PyTorch's CUDA wheels; the CPU wheels have none.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

# Where Triton can (its autotuner's cache_results, where this Triton has it), the tile chosen for a
# shape is kept in Triton's cache folder, keyed by GPU, kernel source, shape and tiles, so that
# only a machine's first process pays the autotuning of each new shape (22.9 s for the five shapes
# of a 1280x720 frame of the GDFN kernel, measured eagerly in session 9; later processes were not timed).
DISK_CACHE = {"cache_results": True} if triton is not None and "cache_results" in inspect.signature(
    triton.autotune).parameters else {}

HALF_DTYPES = (torch.float16, torch.bfloat16)  # the kernels' tensor-core dtypes


def next_power_of_2(n: int) -> int:
    """The block that holds n elements along one side: a power of two, at least 16 (tl.dot's smallest side)."""
    return 1 << max(4, (n - 1).bit_length())


def swap_modules(model: nn.Module, wanted: Callable[[nn.Module], bool], fused: Callable[[Any], nn.Module]) -> int:
    """Replace every module inside ``model`` for which ``wanted`` holds with ``fused(module)``, in
    place. Returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if wanted(child):
                setattr(parent, name, fused(child))
                replaced += 1
    return replaced
