"""The Restormer's 3x3 depthwise convolutions as nine shifted multiply-adds, for ``torch.compile``
(issue 8).

Every transformer block runs two depthwise 3x3 convolutions: on MDTA's q, k, v (3C channels) and
on GDFN's two halves (2 x 2.66C channels), the second followed by the gate gelu(y1) * y2. In the
compiled FP16 GoPro model at 1280x720 on an H100 the convolutions are cuDNN kernels taking 17.2 ms
of a 54 ms frame and the gates another 5.8 ms (docs/benchmarks.md, session 4): 56 GB of reads and
writes per frame, 16.8 ms at the card's 3.35 TB/s. The hand-written Triton gate of
:mod:`engines.triton_gated_dwconv` saved memory but ran slower, and inductor cannot fuse anything
into an opaque kernel.

Written as what it is,

    y[c, h, w] = b[c] + sum over (i, j) in {-1, 0, 1}^2 of  w[c, i, j] * x[c, h + i, w + j]

(zero outside the image), the convolution is a pointwise expression of nine shifted reads of one
tensor, which inductor generates as one loop over the output (neighbouring pixels, contiguous
channels in channels-last) and fuses with what follows. GDFN's gate is written per half,
gelu(dw(y[:C])) * dw(y[C:]), so each half's convolution has one reader and is computed inside the
gate's kernel: the 2C-channel convolution output never reaches memory, only the C gated channels
are written (what :mod:`engines.triton_gated_dwconv` does by hand): 32 GB per 1280x720 frame of
the GoPro model, 9.5 ms at 3.35 TB/s. Sums and the gate run in
float32, rounded once.

Session 3 measured the same nine taps without the per-half gate (``hidiff/taps.py``, removed in
429591b): compiled FP16 at 1280x720 on an H100 the frame took 90.0 ms against 73.6 ms with cuDNN,
so inductor's depthwise kernel was slower than cuDNN's, and its 2C-channel output was still
stored. This version removes that output; whether the saved traffic (about 7 ms at full bandwidth)
outweighs the slower convolution is not measured yet (docs/benchmarks.md, "Not measured yet").

Eagerly the nine products are separate kernels, much slower than cuDNN: :func:`shift_depthwise_convs`
is meant for compiled engines (``torch_engines(..., compile=True, dwconv_as_shifts=True)``). The
weights are the convolutions' own; the exported ONNX graphs keep their Conv nodes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engines.gdfn_gate import GateSwappedGDFN, swap_gdfns

TAPS = [(i, j) for i in range(3) for j in range(3)]


def _shifted_sum(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The depthwise 3x3 convolution of x (B, C, H, W) as nine shifted products, float32."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    if weight.shape != (channels, 1, 3, 3):
        raise ValueError(f"depthwise 3x3 weight for {channels} channels must be ({channels}, 1, 3, 3), got {tuple(weight.shape)}")
    padded = F.pad(x, (1, 1, 1, 1))
    taps = weight.float().view(channels, 9)
    out = padded[:, :, 0:height, 0:width].float() * taps[:, 0].view(1, channels, 1, 1)
    for k, (i, j) in enumerate(TAPS[1:], start=1):
        out = out + padded[:, :, i : i + height, j : j + width].float() * taps[:, k].view(1, channels, 1, 1)
    if bias is not None:
        out = out + bias.float().view(1, channels, 1, 1)
    return out


def depthwise3x3_as_shifts(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1, groups=C)`` for x (B, C, H, W) and weight (C, 1, 3, 3),
    as nine shifted products summed in float32; the result has x's dtype and memory layout."""
    return _shifted_sum(x, weight, bias).to(x.dtype)


def gated_depthwise3x3_as_shifts(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """GDFN's ``gelu(z[:, :C]) * z[:, C:]`` of ``z = F.conv2d(y, weight, bias, padding=1, groups=2C)``,
    each half convolved on its own (y (B, 2C, H, W), weight (2C, 1, 3, 3)); float32 inside."""
    half = y.shape[1] // 2
    if y.shape[1] != 2 * half:
        raise ValueError(f"the gate needs an even channel count, got y {tuple(y.shape)}")
    b1, b2 = (None, None) if bias is None else (bias[:half], bias[half:])
    z1 = _shifted_sum(y[:, :half], weight[:half], b1)
    z2 = _shifted_sum(y[:, half:], weight[half:], b2)
    return (F.gelu(z1) * z2).to(y.dtype)


class ShiftedDepthwiseConv3x3(nn.Module):
    """A depthwise 3x3 ``nn.Conv2d`` (stride 1, padding 1) computed by :func:`depthwise3x3_as_shifts`,
    holding the convolution's own parameters."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not is_depthwise3x3(conv):
            raise ValueError(f"ShiftedDepthwiseConv3x3 needs a 3x3 depthwise convolution with stride 1 and padding 1, got {conv}")
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise3x3_as_shifts(x, self.weight, self.bias)


def is_depthwise3x3(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and tuple(conv.kernel_size) == (3, 3) and conv.groups == conv.in_channels
            == conv.out_channels and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and conv.padding_mode == "zeros")


class ShiftedGateGDFN(GateSwappedGDFN):
    """A GDFN whose depthwise convolution and gate are :func:`gated_depthwise3x3_as_shifts` (same weights)."""

    gated = staticmethod(gated_depthwise3x3_as_shifts)


def shift_depthwise_convs(model: nn.Module) -> int:
    """In place: every GDFN inside ``model`` becomes a :class:`ShiftedGateGDFN`, every other 3x3
    depthwise convolution (MDTA's) a :class:`ShiftedDepthwiseConv3x3`. Returns how many convolutions."""
    replaced = swap_gdfns(model, ShiftedGateGDFN)
    for parent in list(model.modules()):
        if isinstance(parent, ShiftedGateGDFN):
            continue  # its convolution's weights are already read by the shifted gate
        for name, child in list(parent.named_children()):
            if is_depthwise3x3(child):
                setattr(parent, name, ShiftedDepthwiseConv3x3(child))  # type: ignore[arg-type]
                replaced += 1
    return replaced
