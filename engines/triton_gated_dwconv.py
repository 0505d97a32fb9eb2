"""GDFN's gate in one Triton kernel, for the PyTorch CUDA backend (issue 8).

The Restormer's feed-forward network (hidiff.restormer.GDFN) runs, at every pixel,

    y = dwconv3x3(project_in(x))          (2C channels, depthwise)
    z = gelu(y[:C]) * y[C:]               (C channels)
    out = project_out(z)

Eagerly and under ``torch.compile`` the depthwise convolution is a cuDNN kernel that writes all
2C channels, and a second kernel reads them back for the gate. In the compiled FP16 GoPro model at
1280x720 on an H100 the depthwise convolutions took 17.2 ms of a 54 ms frame (docs/benchmarks.md,
session 4): 1.5 times the 11.3 ms that their 38 GB of reads and writes take at the H100's
3.35 TB/s (the gates: 5.8 ms for 18 GB, near that rate). :func:`gated_dwconv3x3`
reads the 2C channels once (channels-last, so each pixel's channels are contiguous), accumulates
the nine taps of both halves in float32, applies the exact (erf) GELU gate and writes only the C
gated channels.

:func:`fuse_gdfn_gates` swaps every GDFN of a Restormer for :class:`FusedGateGDFN`, which calls
the kernel on CUDA float16/bfloat16/float32 tensors and the PyTorch reference
(:func:`gated_dwconv3x3_reference`) elsewhere. The weights are the GDFN's own, so a fused model
computes what the original does, up to float32-versus-float16 rounding of the convolution's output
(tests/engines/test_triton_gated_dwconv.py compares them on a GPU). The op is a
``torch.library.triton_op``: ``torch.compile`` sees through it (no graph break) and keeps the
kernel as written.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hidiff.restormer import GDFN, modulate

try:  # Triton comes with PyTorch's CUDA wheels; the CPU wheels and CI have none.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None


def gated_dwconv3x3_reference(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """gelu(dw(y)[:, :C]) * dw(y)[:, C:] in PyTorch: y (B, 2C, H, W), weight (2C, 1, 3, 3)."""
    z = F.conv2d(y, weight, bias, padding=1, groups=y.shape[1])
    z1, z2 = z.chunk(2, dim=1)
    return F.gelu(z1) * z2


def triton_available() -> bool:
    return triton is not None and torch.cuda.is_available()


if triton is not None:

    @triton.autotune(
        configs=[
            triton.Config({"BLOCK_W": 16, "BLOCK_C": 32}, num_warps=4),
            triton.Config({"BLOCK_W": 32, "BLOCK_C": 32}, num_warps=4),
            triton.Config({"BLOCK_W": 16, "BLOCK_C": 64}, num_warps=4),
            triton.Config({"BLOCK_W": 32, "BLOCK_C": 64}, num_warps=8),
        ],
        key=["C", "W"],
    )
    @triton.jit
    def _gated_dwconv3x3_kernel(
        y_ptr, w_ptr, b_ptr, out_ptr,
        H, W, C,
        stride_yb, stride_yh, stride_yw, stride_yc,
        stride_ob, stride_oh, stride_ow, stride_oc,
        HAS_BIAS: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        # Program: a BLOCK_H x BLOCK_W tile of pixels of one image, BLOCK_C channels of each half.
        tiles_w = tl.cdiv(W, BLOCK_W)
        tile = tl.program_id(0)
        batch = tl.program_id(2).to(tl.int64)
        pix = tl.arange(0, BLOCK_H * BLOCK_W)
        h = (tile // tiles_w) * BLOCK_H + pix // BLOCK_W
        w = (tile % tiles_w) * BLOCK_W + pix % BLOCK_W
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        c1 = c.to(tl.int64) * stride_yc
        c2 = (c + C).to(tl.int64) * stride_yc

        acc1 = tl.zeros((BLOCK_H * BLOCK_W, BLOCK_C), dtype=tl.float32)
        acc2 = tl.zeros((BLOCK_H * BLOCK_W, BLOCK_C), dtype=tl.float32)
        for dy in tl.static_range(3):
            hh = h + (dy - 1)
            for dx in tl.static_range(3):
                ww = w + (dx - 1)
                inside = (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                base = batch * stride_yb + hh.to(tl.int64) * stride_yh + ww.to(tl.int64) * stride_yw
                mask = inside[:, None] & c_ok[None, :]
                y1 = tl.load(y_ptr + base[:, None] + c1[None, :], mask=mask, other=0.0).to(tl.float32)
                y2 = tl.load(y_ptr + base[:, None] + c2[None, :], mask=mask, other=0.0).to(tl.float32)
                w1 = tl.load(w_ptr + c * 9 + (dy * 3 + dx), mask=c_ok, other=0.0).to(tl.float32)
                w2 = tl.load(w_ptr + (c + C) * 9 + (dy * 3 + dx), mask=c_ok, other=0.0).to(tl.float32)
                acc1 += y1 * w1[None, :]
                acc2 += y2 * w2[None, :]
        if HAS_BIAS:
            acc1 += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
            acc2 += tl.load(b_ptr + c + C, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        gated = 0.5 * acc1 * (1.0 + tl.erf(acc1 * 0.7071067811865476)) * acc2

        out_base = batch * stride_ob + h.to(tl.int64) * stride_oh + w.to(tl.int64) * stride_ow
        out_mask = ((h < H) & (w < W))[:, None] & c_ok[None, :]
        tl.store(out_ptr + out_base[:, None] + c.to(tl.int64)[None, :] * stride_oc,
                 gated.to(out_ptr.dtype.element_ty), mask=out_mask)

    BLOCK_H = 4

    @torch.library.triton_op("hidiff::gated_dwconv3x3", mutates_args=())
    def _gated_dwconv3x3_op(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, c2, h, w = y.shape
        c = c2 // 2
        # Channels-last output, like the channels-last convolutions around it.
        out = torch.empty((b, c, h, w), device=y.device, dtype=y.dtype, memory_format=torch.channels_last)
        weight = weight.contiguous()

        def grid(meta: dict[str, int]) -> tuple[int, int, int]:
            return (triton.cdiv(h, BLOCK_H) * triton.cdiv(w, meta["BLOCK_W"]), triton.cdiv(c, meta["BLOCK_C"]), b)

        torch.library.wrap_triton(_gated_dwconv3x3_kernel)[grid](
            y, weight, bias.contiguous() if bias is not None else weight, out,
            h, w, c,
            y.stride(0), y.stride(2), y.stride(3), y.stride(1),
            out.stride(0), out.stride(2), out.stride(3), out.stride(1),
            HAS_BIAS=bias is not None, BLOCK_H=BLOCK_H,
        )
        return out


def gated_dwconv3x3(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """gelu(dw(y)[:, :C]) * dw(y)[:, C:] for y (B, 2C, H, W), weight (2C, 1, 3, 3), bias (2C,) or None.

    One Triton kernel on CUDA tensors (fastest on channels-last ``y``; any strides work), the
    PyTorch reference elsewhere. Returns (B, C, H, W) in y's dtype, channels-last on CUDA.
    """
    if y.dim() != 4 or y.shape[1] % 2 or tuple(weight.shape) != (y.shape[1], 1, 3, 3):
        raise ValueError(f"gated_dwconv3x3 expects y (B, 2C, H, W) and weight (2C, 1, 3, 3), got "
                         f"{tuple(y.shape)} and {tuple(weight.shape)}")
    if triton is None or y.device.type != "cuda":
        return gated_dwconv3x3_reference(y, weight, bias)
    return torch.ops.hidiff.gated_dwconv3x3(y, weight, bias)


class FusedGateGDFN(nn.Module):
    """A GDFN whose depthwise convolution and gate run as :func:`gated_dwconv3x3` (same modules, same weights)."""

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
        return self.project_out(gated_dwconv3x3(self.project_in(x), self.dwconv.weight, self.dwconv.bias))


def fuse_gdfn_gates(model: nn.Module) -> int:
    """Replace every GDFN inside ``model`` with a :class:`FusedGateGDFN`, in place. Returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, GDFN):
                setattr(parent, name, FusedGateGDFN(child))
                replaced += 1
    return replaced
