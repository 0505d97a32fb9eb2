"""Zero-padded channel counts for tensor cores: the same network, every convolution aligned.

Tensor-core convolution and GEMM kernels want channel counts that are multiples of 8 in float16.
The GoPro Restormer has three kinds that are not, and cuDNN runs them with slow kernels:

- the first and last convolutions (3 -> 48 and 96 -> 3 channels, 3x3, full resolution) run as a
  generic direct kernel;
- GDFN's hidden width is ``int(dim * 2.66)``: 127 and 255, so ``project_in`` writes 254 / 510
  channels and ``project_out`` reads 127 / 255, which get the "align1"/"align2" CUTLASS kernels.

:func:`align_channels` pads them with zeros, in place: GDFN's two halves to a multiple of 8
each (``project_in`` and the depthwise convolution gain zero filters, ``project_out`` zero
input columns: ``gelu(0) * 0 = 0`` adds nothing), the first convolution's input to 8 channels
(the module pads the image with zero channels) and the last one's output to 8 (sliced back to
3). Products with zeros are exact, so the output is the same up to the kernels' own rounding
(tests/hidiff/test_aligned_channels.py). The padded weights have other shapes than the
checkpoint's: this is an inference form (``TorchSettings.pad_channels``), never saved.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hidiff.restormer import GDFN, PriorGuidedRestormer

ALIGNMENT = 8


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _padded_rows(tensor: torch.Tensor, blocks: int, block: int, padded_block: int) -> torch.Tensor:
    """``tensor``'s first axis of ``blocks`` x ``block`` rows, each block zero-padded to ``padded_block``."""
    parts = tensor.reshape(blocks, block, *tensor.shape[1:])
    out = tensor.new_zeros(blocks, padded_block, *tensor.shape[1:])
    out[:, :block] = parts
    return out.reshape(blocks * padded_block, *tensor.shape[1:])


def _pad_gdfn(ffn: GDFN, multiple: int) -> bool:
    hidden = ffn.project_out.in_channels
    padded = _round_up(hidden, multiple)
    if padded == hidden:
        return False
    with torch.no_grad():
        for conv in (ffn.project_in, ffn.dwconv):
            conv.weight = nn.Parameter(_padded_rows(conv.weight.data, 2, hidden, padded))
            if conv.bias is not None:
                conv.bias = nn.Parameter(_padded_rows(conv.bias.data, 2, hidden, padded))
            conv.out_channels = 2 * padded
        ffn.dwconv.in_channels = ffn.dwconv.groups = 2 * padded
        weight = ffn.project_out.weight.data
        out = weight.new_zeros(weight.shape[0], padded, *weight.shape[2:])
        out[:, :hidden] = weight
        ffn.project_out.weight = nn.Parameter(out)
        ffn.project_out.in_channels = padded
    return True


class InputPaddedConv(nn.Conv2d):
    """A convolution whose input gains zero channels up to ``in_channels`` (the first layer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = self.in_channels - x.shape[1]
        if missing:
            x = F.pad(x, (0, 0, 0, 0, 0, missing))
        return super().forward(x)


class OutputSlicedConv(nn.Conv2d):
    """A convolution with zero filters appended, its output sliced back to ``kept`` channels."""

    kept: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, : self.kept]


def _conv_like(conv: nn.Conv2d, cls: type[nn.Conv2d], in_channels: int, out_channels: int) -> nn.Conv2d:
    kernel = (conv.kernel_size[0], conv.kernel_size[1])
    padding = conv.padding if isinstance(conv.padding, str) else (conv.padding[0], conv.padding[1])
    new = cls(in_channels, out_channels, kernel, stride=(conv.stride[0], conv.stride[1]), padding=padding,
              bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[: conv.out_channels, : conv.in_channels] = conv.weight
        if conv.bias is not None and new.bias is not None:
            new.bias.zero_()
            new.bias[: conv.out_channels] = conv.bias
    if conv.weight.is_contiguous(memory_format=torch.channels_last):
        new = new.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return new


def align_channels(restormer: PriorGuidedRestormer, multiple: int = ALIGNMENT) -> int:
    """Pad ``restormer``'s unaligned channel counts with zeros, in place (see the module
    docstring). Returns how many convolutions changed; 0 when already aligned."""
    changed = 0
    for module in restormer.modules():
        if isinstance(module, GDFN) and _pad_gdfn(module, multiple):
            changed += 3
    first = restormer.patch_embed.proj
    if type(first) is nn.Conv2d and first.in_channels % multiple:
        restormer.patch_embed.proj = _conv_like(first, InputPaddedConv, _round_up(first.in_channels, multiple),
                                                first.out_channels)
        changed += 1
    last = restormer.output
    if type(last) is nn.Conv2d and last.out_channels % multiple:
        sliced = _conv_like(last, OutputSlicedConv, last.in_channels, _round_up(last.out_channels, multiple))
        sliced.kept = last.out_channels  # type: ignore[assignment]
        restormer.output = sliced
        changed += 1
    return changed
