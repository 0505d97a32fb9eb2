"""Depthwise 3x3 convolutions written as their nine shifted taps, for ``torch.compile``.

Restormer runs a depthwise 3x3 convolution on every full-resolution feature map it expands (q, k,
v in MDTA; the two GDFN halves). cuDNN runs each as its own pass, and inductor cannot fuse what
surrounds a convolution into it. Written as ``sum_ij shift_ij(x) * w[:, i, j]`` the same
convolution is a pointwise expression over nine shifted reads of one tensor, which inductor
generates as one Triton kernel together with its neighbours: GDFN's ``gelu(x1) * x2`` gate, the
bias, the split into q, k and v. Eagerly it is nine passes and slower than cuDNN: use it only
under ``torch.compile`` (the PyTorch backend's ``depthwise_taps`` option).

The modules keep their parameters and names, so checkpoints and exports are unaffected; the
result equals ``F.conv2d`` up to float rounding (tests/hidiff/test_taps.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def depthwise3x3_taps(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1, groups=C)`` for weight (C, 1, 3, 3), as nine taps."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    out = padded[:, :, :height, :width] * weight[:, 0, 0, 0, None, None]
    for i in range(3):
        for j in range(3):
            if i or j:
                out = out + padded[:, :, i:i + height, j:j + width] * weight[:, 0, i, j, None, None]
    return out if bias is None else out + bias[:, None, None]


class DepthwiseTaps(nn.Conv2d):
    """An ``nn.Conv2d(C, C, 3, padding=1, groups=C)`` computed by :func:`depthwise3x3_taps`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise3x3_taps(x, self.weight, self.bias)


def is_depthwise3x3(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.groups == module.in_channels == module.out_channels
            and module.kernel_size == (3, 3) and module.stride == (1, 1) and module.padding == (1, 1)
            and module.dilation == (1, 1) and module.padding_mode == "zeros")


def use_depthwise_taps(model: nn.Module) -> int:
    """Turn every depthwise 3x3 convolution of ``model`` into :class:`DepthwiseTaps`, in place,
    sharing its parameters. Returns how many were turned."""
    count = 0
    for module in model.modules():
        for name, child in module.named_children():
            if is_depthwise3x3(child):
                taps = DepthwiseTaps(child.in_channels, child.out_channels, 3, padding=1, groups=child.groups,
                                     bias=child.bias is not None, device="meta")
                taps.weight, taps.bias = child.weight, child.bias
                setattr(module, name, taps)
                count += 1
    return count
