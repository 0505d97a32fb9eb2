"""The Restormer's depthwise 3x3 convolutions as row-streaming Triton kernels (issue 8).

Every transformer block runs two depthwise 3x3 convolutions at full resolution (hidiff.restormer):

    MDTA:  qkv = dwconv3x3(qkv_1x1(x))                     3C channels in, 3C out
    GDFN:  y = dwconv3x3(project_in(x))                    2H channels in (H = GDFN's hidden width)
           z = gelu(y[:H]) * y[H:]                         H out

In the compiled FP16 GoPro model at 1280x720 on an H100, cuDNN's depthwise kernels took 17.2 ms
and inductor's gates 5.8 ms of a 54 ms frame (docs/benchmarks.md, session 4): about a third of
what the memory system could move. Session 4's fused kernel (nine masked loads per output from a
4-row tile) was slower still.

Here one program owns a strip of ``ROWS`` rows x ``BLOCK_W`` columns x ``BLOCK_C`` channels and
walks down it one input row at a time. Each input row is loaded once (three loads, shifted by a
column, that hit L1 after the first) and added, with the three rows of filter taps, into the three
output rows it touches: the one it completes is stored, the two others are carried in registers.
So every input element is read from memory about once (plus 2 / ``ROWS`` for the strip's halo),
every output written once, and nothing else is stored: the gated form writes only the H gated
channels, not the 2H convolution outputs. Float32 accumulation; exact (erf) GELU.

:func:`dwconv3x3` and :func:`gated_dwconv3x3` run the kernel on CUDA tensors (channels-last is the
fast layout; any strides work) and the PyTorch references elsewhere. They are
``torch.library.triton_op``\\ s, so ``torch.compile`` traces through them without a graph break.
:func:`use_triton_dwconvs` swaps a Restormer's MDTA convolutions and GDFNs for modules that call
them with the model's own weights (the engines' ``triton_dwconv`` option).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hidiff.restormer import GDFN, MDTA, modulate

try:  # Triton comes with PyTorch's CUDA wheels; the CPU wheels and CI have none.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None


def dwconv3x3_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The depthwise 3x3 convolution (padding 1) in PyTorch: x (B, C, H, W), weight (C, 1, 3, 3)."""
    return F.conv2d(x, weight, bias, padding=1, groups=x.shape[1])


def gated_dwconv3x3_reference(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """gelu(dw(y)[:, :C]) * dw(y)[:, C:] in PyTorch: y (B, 2C, H, W), weight (2C, 1, 3, 3)."""
    z1, z2 = dwconv3x3_reference(y, weight, bias).chunk(2, dim=1)
    return F.gelu(z1) * z2


def triton_available() -> bool:
    return triton is not None and torch.cuda.is_available()


def _configs() -> list:
    """The tiles the autotuner tries: about 8 outputs per thread (a pixel pair's 8 channels),
    strips of 16 or 32 rows, the next row's loads issued before this row's arithmetic or after it
    (``PREFETCH``)."""
    tiles = ((4, 64, 1), (8, 64, 2), (16, 64, 4), (8, 128, 4), (16, 32, 2), (32, 64, 8))
    return [triton.Config({"PAIRS": pairs, "BLOCK_C": c, "ROWS": rows, "PREFETCH": prefetch}, num_warps=warps)
            for pairs, c, warps in tiles for rows in (16, 32) for prefetch in (True, False)]


if triton is not None:

    @triton.jit
    def _taps(w_ptr, channel, mask, dy: tl.constexpr):
        """Row ``dy`` of the 3x3 filters of ``channel``: three (1, BLOCK_C) rows in the weights' dtype."""
        taps = w_ptr + channel * 9 + dy * 3
        left = tl.load(taps, mask=mask, other=0.0)[None, :]
        centre = tl.load(taps + 1, mask=mask, other=0.0)[None, :]
        right = tl.load(taps + 2, mask=mask, other=0.0)[None, :]
        return left, centre, right

    @triton.jit
    def _pair_row(x_even, r, H, stride_xh, stride_xw, at_left, at_even, at_odd, at_right, PAIRS: tl.constexpr):
        """Input row ``r`` at the columns a pair of outputs (even, odd) reads: even - 1, even,
        odd and odd + 1 (zeros outside the image), in the input's dtype."""
        rows = r + tl.zeros((PAIRS, 1), dtype=tl.int32)  # the row as a tensor, for the masks
        row_ok = (rows >= 0) & (rows < H)
        p = x_even + r.to(tl.int64) * stride_xh
        left = tl.load(p - stride_xw, mask=at_left & row_ok, other=0.0)
        even = tl.load(p, mask=at_even & row_ok, other=0.0)
        odd = tl.load(p + stride_xw, mask=at_odd & row_ok, other=0.0)
        right = tl.load(p + 2 * stride_xw, mask=at_right & row_ok, other=0.0)
        return left, even, odd, right

    @triton.jit
    def _row_taps(left, centre, right, w0, w1, w2):
        """One row of taps: products in the input's precision, summed in float32."""
        return (left * w0).to(tl.float32) + (centre * w1).to(tl.float32) + (right * w2).to(tl.float32)

    @triton.jit
    def _stream(top, middle, left, centre, right, a0, a1, a2, b0, b1, b2, d0, d1, d2):
        """Input row r into the output rows it touches: r - 1 (``top``, completed and returned
        first), r (``middle``, becomes the new top) and r + 1 (the new middle)."""
        done = top + _row_taps(left, centre, right, d0, d1, d2)
        top = middle + _row_taps(left, centre, right, b0, b1, b2)
        middle = _row_taps(left, centre, right, a0, a1, a2)
        return done, top, middle

    @triton.autotune(configs=_configs(), key=["H", "W", "C", "GATED"])
    @triton.jit
    def _dwconv3x3_rows_kernel(
        x_ptr, w_ptr, b_ptr, out_ptr,
        H, W, C,
        stride_xb, stride_xh, stride_xw, stride_xc,
        stride_ob, stride_oh, stride_ow, stride_oc,
        GATED: tl.constexpr, HAS_BIAS: tl.constexpr,
        ROWS: tl.constexpr, PAIRS: tl.constexpr, BLOCK_C: tl.constexpr, PREFETCH: tl.constexpr,
    ):
        # Program: rows [row0, row0 + ROWS) x 2 * PAIRS columns (PAIRS even ones, each with the odd
        # one after it) x BLOCK_C output channels of one image. The even and odd outputs of a pair
        # share two of their three input columns, so a row costs 4 loads per pair, not 6.
        # C counts output channels; the gated form reads channels c and c + C.
        strips = tl.cdiv(H, ROWS)
        pid = tl.program_id(0)
        row0 = (pid % strips) * ROWS
        even = (pid // strips) * (2 * PAIRS) + 2 * tl.arange(0, PAIRS)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        batch = tl.program_id(2).to(tl.int64)
        c_ok = c < C
        c2 = c + C

        at_left = ((even >= 1) & (even <= W))[:, None] & c_ok[None, :]
        at_even = (even < W)[:, None] & c_ok[None, :]
        at_odd = (even + 1 < W)[:, None] & c_ok[None, :]
        at_right = (even + 2 < W)[:, None] & c_ok[None, :]
        x_even = x_ptr + batch * stride_xb + even.to(tl.int64)[:, None] * stride_xw + c.to(tl.int64)[None, :] * stride_xc
        x_half = C.to(tl.int64) * stride_xc
        out_even = out_ptr + batch * stride_ob + even.to(tl.int64)[:, None] * stride_ow + c.to(tl.int64)[None, :] * stride_oc

        a0, a1, a2 = _taps(w_ptr, c, c_ok, 0)
        b0, b1, b2 = _taps(w_ptr, c, c_ok, 1)
        d0, d1, d2 = _taps(w_ptr, c, c_ok, 2)
        if HAS_BIAS:
            bias1 = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        if GATED:
            e0, e1, e2 = _taps(w_ptr, c2, c_ok, 0)
            f0, f1, f2 = _taps(w_ptr, c2, c_ok, 1)
            g0, g1, g2 = _taps(w_ptr, c2, c_ok, 2)
            if HAS_BIAS:
                bias2 = tl.load(b_ptr + c2, mask=c_ok, other=0.0).to(tl.float32)[None, :]

        # Output rows r - 1 (top: two rows of taps in), r (middle: one) and r + 1 while input row r
        # streams past, for the even and the odd columns; the second half's are the gated form's.
        top_e = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        mid_e = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        top_o = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        mid_o = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        if GATED:
            top_e2 = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
            mid_e2 = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
            top_o2 = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
            mid_o2 = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        if PREFETCH:  # the first row's loads, issued before the loop
            nl, ne, no, nr = _pair_row(x_even, row0 - 1, H, stride_xh, stride_xw, at_left, at_even, at_odd, at_right,
                                       PAIRS)
            if GATED:
                nl2, ne2, no2, nr2 = _pair_row(x_even + x_half, row0 - 1, H, stride_xh, stride_xw, at_left, at_even,
                                               at_odd, at_right, PAIRS)
        for i in range(ROWS + 2):
            r = row0 - 1 + i
            if PREFETCH:  # this row was loaded during the last iteration; issue the next row's loads now
                left, ev, od, right = nl, ne, no, nr
                nl, ne, no, nr = _pair_row(x_even, r + 1, H, stride_xh, stride_xw, at_left, at_even, at_odd,
                                           at_right, PAIRS)
                if GATED:
                    left2, ev2, od2, right2 = nl2, ne2, no2, nr2
                    nl2, ne2, no2, nr2 = _pair_row(x_even + x_half, r + 1, H, stride_xh, stride_xw, at_left, at_even,
                                                   at_odd, at_right, PAIRS)
            else:
                left, ev, od, right = _pair_row(x_even, r, H, stride_xh, stride_xw, at_left, at_even, at_odd,
                                                at_right, PAIRS)
                if GATED:
                    left2, ev2, od2, right2 = _pair_row(x_even + x_half, r, H, stride_xh, stride_xw, at_left,
                                                        at_even, at_odd, at_right, PAIRS)
            done_e, top_e, mid_e = _stream(top_e, mid_e, left, ev, od, a0, a1, a2, b0, b1, b2, d0, d1, d2)
            done_o, top_o, mid_o = _stream(top_o, mid_o, ev, od, right, a0, a1, a2, b0, b1, b2, d0, d1, d2)
            if HAS_BIAS:
                done_e += bias1
                done_o += bias1
            if GATED:
                done_e2, top_e2, mid_e2 = _stream(top_e2, mid_e2, left2, ev2, od2, e0, e1, e2, f0, f1, f2, g0, g1, g2)
                done_o2, top_o2, mid_o2 = _stream(top_o2, mid_o2, ev2, od2, right2, e0, e1, e2, f0, f1, f2, g0, g1, g2)
                if HAS_BIAS:
                    done_e2 += bias2
                    done_o2 += bias2
                done_e = 0.5 * done_e * (1.0 + tl.erf(done_e * 0.7071067811865476)) * done_e2
                done_o = 0.5 * done_o * (1.0 + tl.erf(done_o * 0.7071067811865476)) * done_o2
            finished = r - 1  # the output row that input row r completed
            rows = finished + tl.zeros((PAIRS, 1), dtype=tl.int32)  # as a tensor, for the masks
            row_ok = (rows >= row0) & (rows < H)
            q = out_even + finished.to(tl.int64) * stride_oh
            tl.store(q, done_e.to(out_ptr.dtype.element_ty), mask=at_even & row_ok)
            tl.store(q + stride_ow, done_o.to(out_ptr.dtype.element_ty), mask=at_odd & row_ok)

    def _launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, gated: bool) -> None:
        b, c, h, w = out.shape

        def grid(meta: dict[str, int]) -> tuple[int, int, int]:
            return (triton.cdiv(h, meta["ROWS"]) * triton.cdiv(w, 2 * meta["PAIRS"]), triton.cdiv(c, meta["BLOCK_C"]), b)

        torch.library.wrap_triton(_dwconv3x3_rows_kernel)[grid](
            x, weight, bias if bias is not None else weight, out,
            h, w, c,
            x.stride(0), x.stride(2), x.stride(3), x.stride(1),
            out.stride(0), out.stride(2), out.stride(3), out.stride(1),
            GATED=gated, HAS_BIAS=bias is not None,
        )

    @torch.library.triton_op("hidiff::dwconv3x3_rows", mutates_args=())
    def _dwconv3x3_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # Channels-last output, like the channels-last convolutions around it.
        out = torch.empty(x.shape, device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
        _launch(x, weight.contiguous(), None if bias is None else bias.contiguous(), out, gated=False)
        return out

    @torch.library.triton_op("hidiff::gated_dwconv3x3_rows", mutates_args=())
    def _gated_dwconv3x3_op(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, c2, h, w = y.shape
        out = torch.empty((b, c2 // 2, h, w), device=y.device, dtype=y.dtype, memory_format=torch.channels_last)
        _launch(y, weight.contiguous(), None if bias is None else bias.contiguous(), out, gated=True)
        return out


def _check(x: torch.Tensor, weight: torch.Tensor, what: str, halves: int) -> None:
    if x.dim() != 4 or x.shape[1] % halves or tuple(weight.shape) != (x.shape[1], 1, 3, 3):
        shape = "(B, 2C, H, W) and weight (2C, 1, 3, 3)" if halves == 2 else "(B, C, H, W) and weight (C, 1, 3, 3)"
        raise ValueError(f"{what} expects x {shape}, got {tuple(x.shape)} and {tuple(weight.shape)}")


def dwconv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The depthwise 3x3 convolution with padding 1 of x (B, C, H, W), weight (C, 1, 3, 3), bias (C,) or None.

    The Triton kernel on CUDA tensors (channels-last result), the PyTorch reference elsewhere.
    """
    _check(x, weight, "dwconv3x3", 1)
    if triton is None or x.device.type != "cuda":
        return dwconv3x3_reference(x, weight, bias)
    return torch.ops.hidiff.dwconv3x3_rows(x, weight, bias)


def gated_dwconv3x3(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """gelu(dw(y)[:, :C]) * dw(y)[:, C:] for y (B, 2C, H, W), weight (2C, 1, 3, 3), bias (2C,) or None.

    The Triton kernel on CUDA tensors, the PyTorch reference elsewhere. Returns (B, C, H, W) in
    y's dtype, channels-last on CUDA.
    """
    _check(y, weight, "gated_dwconv3x3", 2)
    if triton is None or y.device.type != "cuda":
        return gated_dwconv3x3_reference(y, weight, bias)
    return torch.ops.hidiff.gated_dwconv3x3_rows(y, weight, bias)


def _require_3x3_depthwise(conv: nn.Conv2d, owner: str) -> None:
    if tuple(conv.kernel_size) != (3, 3) or conv.groups != conv.in_channels or tuple(conv.padding) != (1, 1) \
            or conv.in_channels != conv.out_channels or tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1):
        raise ValueError(f"{owner} needs a 3x3 depthwise convolution with padding 1, got {conv}")


class TritonDepthwiseConv3x3(nn.Module):
    """A 3x3 depthwise ``nn.Conv2d`` (padding 1) that runs as :func:`dwconv3x3`, with its weights."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        _require_3x3_depthwise(conv, type(self).__name__)
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dwconv3x3(x, self.weight, self.bias)


class FusedGateGDFN(nn.Module):
    """A GDFN whose depthwise convolution and gate run as :func:`gated_dwconv3x3` (same modules, same weights)."""

    def __init__(self, ffn: GDFN):
        super().__init__()
        _require_3x3_depthwise(ffn.dwconv, type(self).__name__)
        self.project_in = ffn.project_in
        self.dwconv = ffn.dwconv
        self.project_out = ffn.project_out
        self.modulated = ffn.modulated
        if ffn.modulated:
            self.ln1, self.ln2 = ffn.ln1, ffn.ln2

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        if self.modulated and prior is not None:
            x = modulate(x, self.ln1, self.ln2, prior)
        return self.project_out(gated_dwconv3x3(self.project_in(x), self.dwconv.weight, self.dwconv.bias))


def use_triton_dwconvs(model: nn.Module, attention: bool = True) -> int:
    """Run the depthwise convolutions of the Restormer blocks inside ``model`` through the Triton
    kernels, in place: each GDFN becomes a :class:`FusedGateGDFN` and, with ``attention``, each
    MDTA's ``qkv_dwconv`` a :class:`TritonDepthwiseConv3x3`. Returns how many modules were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        if attention and isinstance(parent, MDTA) and isinstance(parent.qkv_dwconv, nn.Conv2d):
            setattr(parent, "qkv_dwconv", TritonDepthwiseConv3x3(parent.qkv_dwconv))
            swapped += 1
        for name, child in list(parent.named_children()):
            if isinstance(child, GDFN):
                setattr(parent, name, FusedGateGDFN(child))
                swapped += 1
    return swapped
