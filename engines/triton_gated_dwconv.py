"""GDFN's depthwise convolution and gate as one row-streaming Triton kernel (issue 8).

The Restormer's feed-forward network (hidiff.restormer.GDFN) runs, at every pixel,

    y = dwconv3x3(project_in(x))          (2C channels, depthwise)
    z = gelu(y[:C]) * y[C:]               (C channels)
    out = project_out(z)

Eagerly and under ``torch.compile`` the depthwise convolution is a cuDNN kernel that writes all
2C channels, and a second kernel reads them back for the gate. :func:`gated_dwconv3x3` reads the
2C channels once and writes only the C gated ones.

One program owns a strip of ``ROWS`` rows x ``2 * PAIRS`` columns x ``BLOCK_C`` channels of each
half (channels-last, so a pixel's channels are contiguous) and walks down it one input row at a
time. The row is loaded once per pair of output columns (at even - 1, even, odd, odd + 1: the two
outputs share two of their three input columns) and added, with the three rows of filter taps,
into the three output rows it touches: the one it completes is gated and stored, the two others
are carried in registers, and the next row's loads are issued before this row's arithmetic.
Each loaded element is widened to float32 once; taps, products and sums are float32. Exact (erf)
GELU.

Measured (docs/benchmarks.md, session 9): at the shapes of a 1280x720 frame of the GoPro model on
an H100 the kernel takes 11.4 ms per frame where cuDNN's convolution and inductor's gate take
20.3 ms. Session 8's version took 14.1 ms: its tiles spilled registers (255 and a 352-byte stack
per thread on sm_90). Before that was found, halving its arithmetic (float16 products widened
one by one) changed nothing measurable; after, neither did keeping two rows of loads in flight.
The kernel moves 1.5-1.7 TB/s at the large shapes, about half the H100's bandwidth. The same
row-streaming kernel without the gate, for the attention's depthwise convolutions, was slower
than cuDNN's in session 8 (8.5 against 6.9 ms per frame), so those stay cuDNN's.

:func:`fuse_gdfn_gates` swaps every GDFN of a Restormer for :class:`FusedGateGDFN`, which calls
the kernel on CUDA tensors and the PyTorch reference (:func:`gated_dwconv3x3_reference`)
elsewhere, with the GDFN's own weights. The op is a ``torch.library.custom_op``: ``torch.compile``
calls it as one opaque operation, without a graph break. Until session 10 it was a
``triton_op``, which inductor traces into: torch 2.11's inductor then filled every output with
NaN before the kernel wrote it (a whole extra write of the gated map, found in the generated code
by bench/block_code.py), because it cloned the op's freshly allocated output and could not
reinplace the clone.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from hidiff.restormer import GDFN, modulate

try:  # Triton comes with PyTorch's CUDA wheels; the CPU wheels have none.
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


# The tiles the autotuner tries, as (pairs, channels, warps), each holding 2 or 4 channels of a
# pixel pair per thread. At 8 per thread (session 8's tiles) ptxas runs out of registers on sm_90
# (255 and a 352-byte stack of spills); at 4 it needs 207, at 2 about 96, with no spills (a CPU
# test compiles every tile for sm_90 and checks). Session 9's H100 run tried nine such tiles and
# chose (4, 64, 4) at every shape of a 1280x720 frame; the list keeps it and its neighbours, so
# that the first call of a new shape autotunes ten configurations, not eighteen.
TILES = ((4, 64, 4), (2, 64, 2), (8, 64, 8), (4, 64, 2), (8, 64, 4))
STRIP_ROWS = (16, 32)


# Where Triton can (its autotuner's cache_results, where this Triton has it), the tile chosen for a
# shape is kept in Triton's cache folder, keyed by GPU, kernel source, shape and tiles, so that
# only a machine's first process pays the autotuning of each new shape (22.9 s for the five shapes
# of a 1280x720 frame, measured eagerly in session 9; later processes were not timed).
_DISK_CACHE = {"cache_results": True} if triton is not None and "cache_results" in inspect.signature(
    triton.autotune).parameters else {}


def _configs() -> list:
    """Every tile of :data:`TILES` in strips of :data:`STRIP_ROWS` rows."""
    return [triton.Config({"PAIRS": pairs, "BLOCK_C": c, "ROWS": rows}, num_warps=warps)
            for pairs, c, warps in TILES for rows in STRIP_ROWS]


if triton is not None:

    @triton.jit
    def _taps(w_ptr, channel, mask, dy: tl.constexpr):
        """Row ``dy`` of the 3x3 filters of ``channel``: three (1, BLOCK_C) float32 rows."""
        taps = w_ptr + channel * 9 + dy * 3
        left = tl.load(taps, mask=mask, other=0.0).to(tl.float32)[None, :]
        centre = tl.load(taps + 1, mask=mask, other=0.0).to(tl.float32)[None, :]
        right = tl.load(taps + 2, mask=mask, other=0.0).to(tl.float32)[None, :]
        return left, centre, right

    @triton.jit
    def _pair_row(x_even, r, H, stride_xh, stride_xw, at_left, at_even, at_odd, at_right, PAIRS: tl.constexpr):
        """Input row ``r`` at the columns a pair of outputs (even, odd) reads: even - 1, even,
        odd and odd + 1 (zeros outside the image), in the input's dtype (the prefetched row stays
        that narrow until it is used)."""
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
        """One row of taps, float32 multiply-adds."""
        return left * w0 + centre * w1 + right * w2

    @triton.jit
    def _widen(left, even, odd, right):
        """A loaded row in float32: one conversion per element loaded, not one per product."""
        return left.to(tl.float32), even.to(tl.float32), odd.to(tl.float32), right.to(tl.float32)

    @triton.jit
    def _stream(top, middle, left, centre, right, a0, a1, a2, b0, b1, b2, d0, d1, d2):
        """Input row r into the output rows it touches: r - 1 (``top``, completed and returned
        first), r (``middle``, becomes the new top) and r + 1 (the new middle)."""
        done = top + _row_taps(left, centre, right, d0, d1, d2)
        top = middle + _row_taps(left, centre, right, b0, b1, b2)
        middle = _row_taps(left, centre, right, a0, a1, a2)
        return done, top, middle

    @triton.jit
    def _gelu(x):
        return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))

    @triton.autotune(configs=_configs(), key=["H", "W", "C"], **_DISK_CACHE)
    @triton.jit
    def _gated_dwconv3x3_kernel(
        y_ptr, w_ptr, b_ptr, out_ptr,
        H, W, C,
        stride_yb, stride_yh, stride_yw, stride_yc,
        stride_ob, stride_oh, stride_ow, stride_oc,
        HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, PAIRS: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        # Program: rows [row0, row0 + ROWS) x 2 * PAIRS columns (PAIRS even ones, each with the odd
        # one after it) x BLOCK_C output channels c of one image, which read channels c and c + C.
        strips = tl.cdiv(H, ROWS)
        pid = tl.program_id(0)
        row0 = (pid % strips) * ROWS
        even = (pid // strips) * (2 * PAIRS) + 2 * tl.arange(0, PAIRS)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        batch = tl.program_id(2).to(tl.int64)
        c_ok = c < C

        at_left = ((even >= 1) & (even <= W))[:, None] & c_ok[None, :]
        at_even = (even < W)[:, None] & c_ok[None, :]
        at_odd = (even + 1 < W)[:, None] & c_ok[None, :]
        at_right = (even + 2 < W)[:, None] & c_ok[None, :]
        y_even = y_ptr + batch * stride_yb + even.to(tl.int64)[:, None] * stride_yw
        y1 = y_even + c.to(tl.int64)[None, :] * stride_yc
        # The second half's channels as a tensor: torch.compile's mutation analysis traces the
        # kernel with the integer arguments as Python ints, which have no .to().
        y2 = y_even + (c + C).to(tl.int64)[None, :] * stride_yc
        out_even = out_ptr + batch * stride_ob + even.to(tl.int64)[:, None] * stride_ow + c.to(tl.int64)[None, :] * stride_oc

        a0, a1, a2 = _taps(w_ptr, c, c_ok, 0)
        b0, b1, b2 = _taps(w_ptr, c, c_ok, 1)
        d0, d1, d2 = _taps(w_ptr, c, c_ok, 2)
        e0, e1, e2 = _taps(w_ptr, c + C, c_ok, 0)
        f0, f1, f2 = _taps(w_ptr, c + C, c_ok, 1)
        g0, g1, g2 = _taps(w_ptr, c + C, c_ok, 2)
        if HAS_BIAS:
            bias1 = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
            bias2 = tl.load(b_ptr + c + C, mask=c_ok, other=0.0).to(tl.float32)[None, :]

        # Output rows r - 1 (top: two rows of taps in), r (middle: one) and r + 1 while input row r
        # streams past, for the even and the odd columns of both halves.
        top_e = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        mid_e = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        top_o = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        mid_o = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        top_e2 = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        mid_e2 = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        top_o2 = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        mid_o2 = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        nl, ne, no, nr = _pair_row(y1, row0 - 1, H, stride_yh, stride_yw, at_left, at_even, at_odd, at_right, PAIRS)
        nl2, ne2, no2, nr2 = _pair_row(y2, row0 - 1, H, stride_yh, stride_yw, at_left, at_even, at_odd, at_right,
                                       PAIRS)
        for i in range(ROWS + 2):
            r = row0 - 1 + i
            # This row was loaded during the last iteration; issue the next row's loads now.
            left, ev, od, right = _widen(nl, ne, no, nr)
            left2, ev2, od2, right2 = _widen(nl2, ne2, no2, nr2)
            nl, ne, no, nr = _pair_row(y1, r + 1, H, stride_yh, stride_yw, at_left, at_even, at_odd, at_right, PAIRS)
            nl2, ne2, no2, nr2 = _pair_row(y2, r + 1, H, stride_yh, stride_yw, at_left, at_even, at_odd, at_right,
                                           PAIRS)
            done_e, top_e, mid_e = _stream(top_e, mid_e, left, ev, od, a0, a1, a2, b0, b1, b2, d0, d1, d2)
            done_o, top_o, mid_o = _stream(top_o, mid_o, ev, od, right, a0, a1, a2, b0, b1, b2, d0, d1, d2)
            done_e2, top_e2, mid_e2 = _stream(top_e2, mid_e2, left2, ev2, od2, e0, e1, e2, f0, f1, f2, g0, g1, g2)
            done_o2, top_o2, mid_o2 = _stream(top_o2, mid_o2, ev2, od2, right2, e0, e1, e2, f0, f1, f2, g0, g1, g2)
            if HAS_BIAS:
                done_e, done_o = done_e + bias1, done_o + bias1
                done_e2, done_o2 = done_e2 + bias2, done_o2 + bias2
            finished = r - 1  # the output row that input row r completed
            rows = finished + tl.zeros((PAIRS, 1), dtype=tl.int32)  # as a tensor, for the masks
            row_ok = (rows >= row0) & (rows < H)
            q = out_even + finished.to(tl.int64) * stride_oh
            tl.store(q, (_gelu(done_e) * done_e2).to(out_ptr.dtype.element_ty), mask=at_even & row_ok)
            tl.store(q + stride_ow, (_gelu(done_o) * done_o2).to(out_ptr.dtype.element_ty), mask=at_odd & row_ok)

    @torch.library.custom_op("hidiff::gated_dwconv3x3", mutates_args=())
    def _gated_dwconv3x3_op(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, c2, h, w = y.shape
        c = c2 // 2
        # Channels-last output, like the channels-last convolutions around it.
        out = torch.empty((b, c, h, w), device=y.device, dtype=y.dtype, memory_format=torch.channels_last)
        weight = weight.contiguous()

        def grid(meta: dict[str, int]) -> tuple[int, int, int]:
            return (triton.cdiv(h, meta["ROWS"]) * triton.cdiv(w, 2 * meta["PAIRS"]), triton.cdiv(c, meta["BLOCK_C"]), b)

        _gated_dwconv3x3_kernel[grid](
            y, weight, bias.contiguous() if bias is not None else weight, out,
            h, w, c,
            y.stride(0), y.stride(2), y.stride(3), y.stride(1),
            out.stride(0), out.stride(2), out.stride(3), out.stride(1),
            HAS_BIAS=bias is not None,
        )
        return out

    @_gated_dwconv3x3_op.register_fake
    def _gated_dwconv3x3_shape(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, c2, h, w = y.shape
        return torch.empty((b, c2 // 2, h, w), device=y.device, dtype=y.dtype, memory_format=torch.channels_last)


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
        if tuple(conv.kernel_size) != (3, 3) or conv.groups != conv.in_channels or tuple(conv.padding) != (1, 1) \
                or tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1):
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
