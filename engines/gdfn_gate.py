"""GDFN with its depthwise convolution and gate swapped for another implementation of the same
computation, for the PyTorch CUDA backend's variants (:mod:`engines.triton_gated_dwconv`; session 5's
shifted-product variant was measured slower and removed in session 6, docs/benchmarks.md).

hidiff.restormer.GDFN computes ``project_out(gate(dwconv(project_in(x))))`` with
``gate(z) = gelu(z[:, :C]) * z[:, C:]``. A subclass of :class:`GateSwappedGDFN` names one function
``gated(y, weight, bias)`` for ``gate(dwconv(y))`` and keeps the GDFN's own modules and weights.
"""
from __future__ import annotations

import torch
from torch import nn

from hidiff.restormer import GDFN, modulate


class GateSwappedGDFN(nn.Module):
    """A GDFN computing its depthwise convolution and gate with ``gated`` (same modules, same weights)."""

    @staticmethod
    def gated(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """gate(dwconv(y)) for y (B, 2C, H, W), the convolution's weight (2C, 1, 3, 3) and bias."""
        raise NotImplementedError

    def __init__(self, ffn: GDFN):
        super().__init__()
        conv = ffn.dwconv
        if tuple(conv.kernel_size) != (3, 3) or conv.groups != conv.in_channels or tuple(conv.padding) != (1, 1):
            raise ValueError(f"{type(self).__name__} needs a 3x3 depthwise convolution with padding 1, got {conv}")
        self.project_in = ffn.project_in
        self.dwconv = conv
        self.project_out = ffn.project_out
        self.modulated = ffn.modulated
        if ffn.modulated:
            self.ln1, self.ln2 = ffn.ln1, ffn.ln2

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        if self.modulated and prior is not None:
            x = modulate(x, self.ln1, self.ln2, prior)
        return self.project_out(self.gated(self.project_in(x), self.dwconv.weight, self.dwconv.bias))


def swap_gdfns(model: nn.Module, swapped: type[GateSwappedGDFN]) -> int:
    """Replace every GDFN inside ``model`` with ``swapped(gdfn)``, in place. Returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, GDFN):
                setattr(parent, name, swapped(child))
                replaced += 1
    return replaced
