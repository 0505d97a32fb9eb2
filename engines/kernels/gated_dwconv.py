"""GDFN's depthwise convolution and gate as one row-streaming Triton kernel.

The Restormer's feed-forward network (hidiff.restormer.GDFN) runs, at every pixel,

    y = dwconv3x3(project_in(x))          (2C channels, depthwise)
    z = gelu(y[:C]) * y[C:]               (C channels)
    out = project_out(z)

Unfused, the depthwise convolution writes all 2C channels and a second kernel reads them back
for the gate. :func:`gated_dwconv3x3` reads the 2C channels once and writes only the C gated
ones; ``fuse_restormer(gates=True)`` runs every GDFN this way.

One program owns a strip of ``ROWS`` rows x ``2 * PAIRS`` columns x ``BLOCK_C`` channels of each
half (channels-last, so a pixel's channels are contiguous) and walks down it one input row at a
time. The row is loaded once per pair of output columns (at even - 1, even, odd, odd + 1: the two
outputs share two of their three input columns) and added, with the three rows of filter taps,
into the three output rows it touches: the one it completes is gated and stored, the two others
stay in registers. The roles of the three sums turn with every row, so the loop takes three input
rows at a time (all 24 of their loads issued first) and never copies a sum. Each loaded element is
widened to float32 once; taps, products and sums are float32. GELU is exact, with erf by
Abramowitz and Stegun 7.1.26 (absolute error at most 1.5e-7): one polynomial and one exponential
per element, where libdevice's erff selects between two polynomials per element. The channel
count is a compile-time constant, so that the eight loads of a row are one pointer per element
plus constant offsets; strips away from the image's edges (most of them) load and store without
masks.

The op is a ``torch.library.custom_op``: ``torch.compile`` calls it as one opaque operation,
without a graph break; its ``triton_op`` form is what packages compile in (engines.kernels.support
on the two forms, and on allocating the outputs: inductor copied an output allocated with
``memory_format=torch.channels_last`` into that order before the kernel wrote it).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engines.kernels.support import autotune, empty_channels_last, kernel_op, kernel_runs, tile_configs, tl, triton


def gated_dwconv3x3_reference(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """gelu(dw(y)[:, :C]) * dw(y)[:, C:] in PyTorch: y (B, 2C, H, W), weight (2C, 1, 3, 3)."""
    z = F.conv2d(y, weight, bias, padding=1, groups=y.shape[1])
    z1, z2 = z.chunk(2, dim=1)
    return F.gelu(z1) * z2


# The tiles the autotuner tries, (PAIRS, BLOCK_C, warps), each holding 2 channels of a pixel pair
# per thread (about 120 registers on sm_90, no spills; 4 a thread need 234, 8 spill: a CPU test
# compiles every tile for sm_90 and checks), in strips of STRIP_ROWS rows.
TILES = ((4, 64, 4), (2, 64, 2), (2, 128, 4))
STRIP_ROWS = (16, 34, 64)  # the loop takes three input rows at a time: ROWS + 2 a multiple of three wastes none


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
    def _input_row(y_image, y_offsets, r, H, W, at_left, at_even, at_odd, at_right,
                   C: tl.constexpr, MASKED: tl.constexpr):
        """Input row ``r`` at the columns a pair of outputs (even, odd) reads, even - 1, even, odd
        and odd + 1, in both halves of the channels: eight (PAIRS, BLOCK_C) tensors in the input's
        dtype. Every address is one pointer per element plus a constant (pixels are 2C elements
        apart). ``MASKED``: zeros outside the image (and the channels); else no mask at all."""
        p = y_image + r.to(tl.int64) * W * (2 * C) + y_offsets
        if MASKED:
            rows = r + tl.zeros((1, 1), dtype=tl.int32)  # the row as a tensor, for the masks
            row_ok = (rows >= 0) & (rows < H)
            left = tl.load(p - 2 * C, mask=at_left & row_ok, other=0.0)
            even = tl.load(p, mask=at_even & row_ok, other=0.0)
            odd = tl.load(p + 2 * C, mask=at_odd & row_ok, other=0.0)
            right = tl.load(p + 4 * C, mask=at_right & row_ok, other=0.0)
            left2 = tl.load(p - C, mask=at_left & row_ok, other=0.0)
            even2 = tl.load(p + C, mask=at_even & row_ok, other=0.0)
            odd2 = tl.load(p + 3 * C, mask=at_odd & row_ok, other=0.0)
            right2 = tl.load(p + 5 * C, mask=at_right & row_ok, other=0.0)
        else:
            left, even, odd, right = tl.load(p - 2 * C), tl.load(p), tl.load(p + 2 * C), tl.load(p + 4 * C)
            left2, even2, odd2, right2 = tl.load(p - C), tl.load(p + C), tl.load(p + 3 * C), tl.load(p + 5 * C)
        return left, even, odd, right, left2, even2, odd2, right2

    @triton.jit
    def _half_step(done_e, done_o, mid_e, mid_o, left, even, odd, right, a0, a1, a2, b0, b1, b2, d0, d1, d2):
        """Input row r, one half of the channels, into the three output rows it touches: r - 1
        (``done``: its last row of taps), r (``mid``: its second) and r + 1 (returned new: its
        first), for the even and the odd column of each pair. The row is widened to float32 once;
        each sum grows by a chain of float32 multiply-adds."""
        left, even, odd, right = left.to(tl.float32), even.to(tl.float32), odd.to(tl.float32), right.to(tl.float32)
        done_e = done_e + left * d0 + even * d1 + odd * d2
        done_o = done_o + even * d0 + odd * d1 + right * d2
        mid_e = mid_e + left * b0 + even * b1 + odd * b2
        mid_o = mid_o + even * b0 + odd * b1 + right * b2
        return (done_e, done_o, mid_e, mid_o,
                left * a0 + even * a1 + odd * a2, even * a0 + odd * a1 + right * a2)

    @triton.jit
    def gelu(x):
        """x Phi(x), exact GELU, with erf by Abramowitz and Stegun 7.1.26 (absolute error at most
        1.5e-7, far below float16's rounding of the output): one polynomial in t = 1 / (1 + p|z|),
        z = x / sqrt(2), times exp(-z^2), constants folded. libdevice's erff chooses between two
        polynomials per element; its coefficient selects were a third of the kernel's instructions."""
        t = tl.math.fdiv(1.0, 1.0 + 0.23164190 * tl.abs(x), ieee_rounding=False)  # p / sqrt(2)
        # A&S's coefficients halved: x (1 - erf(|z|)) / 2 = x poly(t) exp(-z^2)
        poly = t * (0.127414796 + t * (-0.142248368 + t * (0.7107068705 + t * (-0.7265760135 + t * 0.5307027145))))
        half_tail = x * poly * tl.exp2(x * x * -0.7213475204444817)  # exp(-x^2 / 2) = 2^(-x^2 log2(e) / 2)
        return tl.where(x >= 0, x - half_tail, half_tail)

    @triton.jit
    def _store_row(o_image, o_offsets, row, first, end, W, at_even, at_odd, done_e, done_o, done_e2, done_o2,
                   C: tl.constexpr, MASKED: tl.constexpr):
        """gelu(first half) * second half of a completed output row, if it is one of this
        program's rows [first, end)."""
        if (row >= first) & (row < end):
            q = o_image + row.to(tl.int64) * W * C + o_offsets
            gated_e = (gelu(done_e) * done_e2).to(o_image.dtype.element_ty)
            gated_o = (gelu(done_o) * done_o2).to(o_image.dtype.element_ty)
            if MASKED:
                tl.store(q, gated_e, mask=at_even)
                tl.store(q + C, gated_o, mask=at_odd)
            else:
                tl.store(q, gated_e)
                tl.store(q + C, gated_o)

    @triton.jit
    def _strip(y_image, o_image, y_offsets, o_offsets, row0, end, H, W, at_left, at_even, at_odd, at_right,
               a0, a1, a2, b0, b1, b2, d0, d1, d2, e0, e1, e2, f0, f1, f2, g0, g1, g2, bias1, bias2,
               C: tl.constexpr, ROWS: tl.constexpr, PAIRS: tl.constexpr, BLOCK_C: tl.constexpr,
               MASKED: tl.constexpr):
        """The program's strip, input rows row0 - 1 to row0 + ROWS streaming past (rounded up to
        a multiple of three: the extra rows' outputs are not stored)."""
        # Three slots of output rows, each four (PAIRS, BLOCK_C) float32 sums (even and odd
        # columns, both halves). As input row r streams past, one slot holds row r - 1 (two rows
        # of taps in), one row r (one row in) and one receives row r + 1; the roles turn with
        # every row, so the loop takes three rows at a time and no sum is ever copied.
        zero = tl.zeros((PAIRS, BLOCK_C), dtype=tl.float32)
        A_e, A_o, A_e2, A_o2 = zero, zero, zero, zero  # row r - 1 when the loop's first row r arrives
        B_e, B_o, B_e2, B_o2 = zero, zero, zero, zero  # row r
        for i in range(0, ROWS + 2, 3):
            r = row0 - 1 + i
            # The three rows' loads first, all in flight at once.
            l0, m0, o0, r0, l0b, m0b, o0b, r0b = _input_row(y_image, y_offsets, r, H, W, at_left, at_even, at_odd,
                                                            at_right, C, MASKED)
            l1, m1, o1, r1, l1b, m1b, o1b, r1b = _input_row(y_image, y_offsets, r + 1, H, W, at_left, at_even, at_odd,
                                                            at_right, C, MASKED)
            l2, m2, o2, r2, l2b, m2b, o2b, r2b = _input_row(y_image, y_offsets, r + 2, H, W, at_left, at_even, at_odd,
                                                            at_right, C, MASKED)
            # Row r: completes slot A (output row r - 1), adds to B, starts C.
            A_e, A_o, B_e, B_o, C_e, C_o = _half_step(A_e, A_o, B_e, B_o, l0, m0, o0, r0,
                                                      a0, a1, a2, b0, b1, b2, d0, d1, d2)
            A_e2, A_o2, B_e2, B_o2, C_e2, C_o2 = _half_step(A_e2, A_o2, B_e2, B_o2, l0b, m0b, o0b, r0b,
                                                            e0, e1, e2, f0, f1, f2, g0, g1, g2)
            _store_row(o_image, o_offsets, r - 1, row0, end, W, at_even, at_odd,
                       A_e + bias1, A_o + bias1, A_e2 + bias2, A_o2 + bias2, C, MASKED)
            # Row r + 1: completes B (output row r), adds to C, starts A.
            B_e, B_o, C_e, C_o, A_e, A_o = _half_step(B_e, B_o, C_e, C_o, l1, m1, o1, r1,
                                                      a0, a1, a2, b0, b1, b2, d0, d1, d2)
            B_e2, B_o2, C_e2, C_o2, A_e2, A_o2 = _half_step(B_e2, B_o2, C_e2, C_o2, l1b, m1b, o1b, r1b,
                                                            e0, e1, e2, f0, f1, f2, g0, g1, g2)
            _store_row(o_image, o_offsets, r, row0, end, W, at_even, at_odd,
                       B_e + bias1, B_o + bias1, B_e2 + bias2, B_o2 + bias2, C, MASKED)
            # Row r + 2: completes C (output row r + 1), adds to A, starts B.
            C_e, C_o, A_e, A_o, B_e, B_o = _half_step(C_e, C_o, A_e, A_o, l2, m2, o2, r2,
                                                      a0, a1, a2, b0, b1, b2, d0, d1, d2)
            C_e2, C_o2, A_e2, A_o2, B_e2, B_o2 = _half_step(C_e2, C_o2, A_e2, A_o2, l2b, m2b, o2b, r2b,
                                                            e0, e1, e2, f0, f1, f2, g0, g1, g2)
            _store_row(o_image, o_offsets, r + 1, row0, end, W, at_even, at_odd,
                       C_e + bias1, C_o + bias1, C_e2 + bias2, C_o2 + bias2, C, MASKED)

    @autotune(tile_configs(("PAIRS", "BLOCK_C", "num_warps", "ROWS"),
                           [(*tile, rows) for tile in TILES for rows in STRIP_ROWS]), key=["H", "W", "C"])
    @triton.jit
    def gated_dwconv3x3_kernel(
        y_ptr, w_ptr, b_ptr, out_ptr,
        H, W,
        C: tl.constexpr, HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, PAIRS: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        # y (B, H, W, 2C) and out (B, H, W, C), contiguous channels-last. Program: rows [row0,
        # row0 + ROWS) x 2 * PAIRS columns (PAIRS even ones, each with the odd one after it) x
        # BLOCK_C output channels c of one image, which read channels c and c + C.
        strips = tl.cdiv(H, ROWS)
        pid = tl.program_id(0)
        row0 = (pid % strips) * ROWS
        col0 = (pid // strips) * (2 * PAIRS)
        even = col0 + 2 * tl.arange(0, PAIRS)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        batch = tl.program_id(2).to(tl.int64)
        c_ok = c < C
        at_left = ((even >= 1) & (even <= W))[:, None] & c_ok[None, :]
        at_even = (even < W)[:, None] & c_ok[None, :]
        at_odd = (even + 1 < W)[:, None] & c_ok[None, :]
        at_right = (even + 2 < W)[:, None] & c_ok[None, :]
        y_image = y_ptr + batch * H * W * (2 * C)
        o_image = out_ptr + batch * H * W * C
        y_offsets = even[:, None] * (2 * C) + c[None, :]  # within a row
        o_offsets = even[:, None] * C + c[None, :]
        end = tl.minimum(row0 + ROWS, H)

        a0, a1, a2 = _taps(w_ptr, c, c_ok, 0)
        b0, b1, b2 = _taps(w_ptr, c, c_ok, 1)
        d0, d1, d2 = _taps(w_ptr, c, c_ok, 2)
        e0, e1, e2 = _taps(w_ptr, c + C, c_ok, 0)
        f0, f1, f2 = _taps(w_ptr, c + C, c_ok, 1)
        g0, g1, g2 = _taps(w_ptr, c + C, c_ok, 2)
        bias1 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        bias2 = tl.zeros((1, BLOCK_C), dtype=tl.float32)
        if HAS_BIAS:
            bias1 = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
            bias2 = tl.load(b_ptr + c + C, mask=c_ok, other=0.0).to(tl.float32)[None, :]

        # A strip whose every input row and column (rows row0 - 1 to the loop's last, columns
        # col0 - 1 to col0 + 2 * PAIRS) lies inside the image, with whole channel blocks, loads
        # and stores without masks: most of them. The others take the masked copy of the loop.
        last_row = row0 - 1 + ((ROWS + 4) // 3) * 3 - 1
        inside = (row0 >= 1) & (last_row < H) & (col0 >= 1) & (col0 + 2 * PAIRS < W) & (
            tl.program_id(1) * BLOCK_C + BLOCK_C <= C)
        if inside:
            _strip(y_image, o_image, y_offsets, o_offsets, row0, end, H, W, at_left, at_even, at_odd, at_right,
                   a0, a1, a2, b0, b1, b2, d0, d1, d2, e0, e1, e2, f0, f1, f2, g0, g1, g2, bias1, bias2,
                   C, ROWS, PAIRS, BLOCK_C, False)
        else:
            _strip(y_image, o_image, y_offsets, o_offsets, row0, end, H, W, at_left, at_even, at_odd, at_right,
                   a0, a1, a2, b0, b1, b2, d0, d1, d2, e0, e1, e2, f0, f1, f2, g0, g1, g2, bias1, bias2,
                   C, ROWS, PAIRS, BLOCK_C, True)

    @torch.library.custom_op("hidiff::gated_dwconv3x3", mutates_args=())
    def _gated_dwconv3x3_op(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return launch_gated_dwconv3x3(gated_dwconv3x3_kernel, y, weight, bias)

    @_gated_dwconv3x3_op.register_fake
    def _gated_dwconv3x3_shape(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, c2, h, w = y.shape
        return empty_channels_last(y, c2 // 2)

    @torch.library.triton_op("hidiff::gated_dwconv3x3_packaged", mutates_args=())
    def _gated_dwconv3x3_packaged(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return launch_gated_dwconv3x3(torch.library.wrap_triton(gated_dwconv3x3_kernel), y, weight, bias)


def launch_gated_dwconv3x3(kernel: Any, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           **tile: int) -> torch.Tensor:
    """One launch of ``kernel`` (the autotuned kernel, or its ``.fn`` with an explicit ``tile``):
    y is read channels-last (copied first if it is not), the output is written channels-last."""
    b, c2, h, w = y.shape
    c = c2 // 2
    y = y.contiguous(memory_format=torch.channels_last)
    out = empty_channels_last(y, c)

    def grid(meta: dict[str, int]) -> tuple[int, int, int]:
        return (triton.cdiv(h, meta["ROWS"]) * triton.cdiv(w, 2 * meta["PAIRS"]), triton.cdiv(c, meta["BLOCK_C"]), b)

    kernel[grid](y, weight.contiguous(), bias.contiguous() if bias is not None else weight, out, h, w,
                 C=c, HAS_BIAS=bias is not None, **tile)
    return out


def gated_dwconv3x3(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """gelu(dw(y)[:, :C]) * dw(y)[:, C:] for y (B, 2C, H, W), weight (2C, 1, 3, 3), bias (2C,) or None.

    One Triton kernel on CUDA tensors (fastest on channels-last ``y``; any strides work), the
    PyTorch reference elsewhere. Returns (B, C, H, W) in y's dtype, channels-last on CUDA.
    """
    if y.dim() != 4 or y.shape[1] % 2 or tuple(weight.shape) != (y.shape[1], 1, 3, 3):
        raise ValueError(f"gated_dwconv3x3 expects y (B, 2C, H, W) and weight (2C, 1, 3, 3), got "
                         f"{tuple(y.shape)} and {tuple(weight.shape)}")
    if not kernel_runs(y, any_dtype=True):
        return gated_dwconv3x3_reference(y, weight, bias)
    return kernel_op("gated_dwconv3x3")(y, weight, bias)
