"""MDTA's per-head cosine similarities of q and k over all pixels: one Triton kernel that reads q
and k once.

MDTA (hidiff.restormer.MDTA, Restormer Sec. 3.1) needs, per image and head h, the (d x d) matrix

    cos(q_i, k_j) = <q_i, k_j> / (|q_i| |k_j|)      over the N = H*W pixels,  d = C / heads,

of q_h = channels [h d, h d + d) and k_h = channels [C + h d, C + h d + d) of qk (B, 2C, N).
``MDTA.mixing`` computes it as ``head_blocks(channel_cosine(qk), heads)``: one cuBLAS product of
the whole Gram matrix [q; k] [q; k]^T, (2C x 2C) float32, of which it keeps the q k^T blocks of
the heads and the diagonal. cuBLAS runs that product, contracted over up to a million pixels, as
a split-K GEMM, and computes products nobody reads: the q q^T and k k^T blocks beyond their
diagonals, and with several heads the q k^T blocks across heads.

:func:`head_cosine` reads q and k once and computes only the heads' blocks and the norms. One
program of :data:`head_gram_kernel` owns one (image, head) and a contiguous range of pixels (rows
n of the (N, 2C) matrix that qk is in channels-last memory), loads q_h and k_h in tiles of
BLOCK_N rows, and accumulates q_h^T k_h and the sums of squares of q's and k's channels on the
tensor cores (float16/bfloat16 products, float32 sums; ``SQUARES`` below). The ranges split the
contraction (split-K) so that enough programs run: each program writes its partial sums, without
atomics (deterministic), into ``partials`` (B, heads, SPLIT, d + 2, d) float32, and
:func:`head_gram_partials_to_cosine` adds them and normalises in plain PyTorch, so that
``torch.compile`` can fuse that into the small kernels after it (MDTA's softmax). The kernel is a
``torch.library.custom_op`` (``hidiff::head_gram_partials``): compiled graphs call it as one opaque
operation, without graph breaks. ``fuse_restormer(head_gram=True)`` computes the cosines of the
blocks it fuses this way.
"""
from __future__ import annotations

from typing import Any

import torch

from engines.kernels.support import (
    FALLBACK_CAPABILITY,
    autotune,
    cdiv,
    dot_block,
    kernel_op,
    kernel_runs,
    launch_capability,
    sm_count,
    tile_configs,
    tl,
    triton,
)
from hidiff.restormer import channel_cosine, head_blocks

# The widest head the kernel takes (D_PAD 128): its [D_PAD, D_PAD] float32 accumulator fills 64
# registers a thread at 8 warps. Wider heads (none in the released models) use the reference.
MAX_HEAD_DIM = 128


# ------------------------------------------------------------------------------------ references


def head_cosine_reference(qk: torch.Tensor, heads: int, eps: float = 1e-12) -> torch.Tensor:
    """cos(q_i, k_j) per head, as MDTA computes it (hidiff.restormer): qk (B, 2C, N) with q on
    channels [0, C) and k on [C, 2C), -> (B, heads, d, d) float32, d = C / heads."""
    return head_blocks(channel_cosine(qk, eps), heads)


def head_gram_partials_to_cosine(partials: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The kernel's partial sums (B, heads, SPLIT, d + 2, d) float32 to the cosines (B, heads, d, d):
    rows [0, d) of a partial hold q_h k_h^T, row d the |q_i|^2 and row d + 1 the |k_j|^2. The norms
    are clamped at ``eps`` as ``F.normalize`` (and hidiff.restormer.channel_cosine) clamp them."""
    d = partials.shape[-1]
    sums = partials.sum(dim=2)
    gram, q_sq, k_sq = sums[..., :d, :], sums[..., d, :], sums[..., d + 1, :]
    return gram / (q_sq.sqrt().clamp_min(eps)[..., :, None] * k_sq.sqrt().clamp_min(eps)[..., None, :])


# ------------------------------------------------------------------------------------ the split

# The contraction over N is cut into SPLIT ranges of ROWS rows per (image, head), chosen on the host
# from N, B * heads and the SM count alone (not from the autotuned tile, so that the shape of the
# partials is known before the launch and to torch.compile's fake tensors):
# - about PROGRAMS_PER_SM programs per SM over the whole grid, so that every SM holds two or more
#   programs whose loads overlap (a 1280x720 frame at level 1: 1 x 360 programs on 132 SMs);
# - at least MIN_ROWS rows a program, so that the pipelined loop runs several tiles and the
#   partials (d + 2) * d * 4 bytes a program stay small beside the 4 d * ROWS bytes it reads;
# - ROWS a multiple of ROW_MULTIPLE, the largest BLOCK_N: only a pixel range's last tile is partial.
PROGRAMS_PER_SM = 3
MIN_ROWS = 1024
ROW_MULTIPLE = 256


def head_gram_split(n: int, programs: int, sms: int) -> tuple[int, int]:
    """(SPLIT, ROWS): how many ranges of how many pixels each of the ``programs`` (image, head)
    pairs is cut into, for N = ``n`` pixels on ``sms`` SMs."""
    wanted = max(1, cdiv(PROGRAMS_PER_SM * sms, programs))
    rows = max(MIN_ROWS, cdiv(cdiv(n, wanted), ROW_MULTIPLE) * ROW_MULTIPLE)
    return max(1, cdiv(n, rows)), rows


def head_gram_split_for(qk: torch.Tensor, heads: int) -> tuple[int, int]:
    """(SPLIT, ROWS) of :func:`head_gram_split` for a launch on qk (B, 2C, N) with ``heads`` heads."""
    return head_gram_split(qk.shape[2], qk.shape[0] * heads, sm_count(qk.device))


# ------------------------------------------------------------------------------------ kernel

# How a program sums the squares of q's and k's channels (the norms), SQUARES:
#   3  on the tensor cores: (q * q)^T times a [BLOCK_N, 16] block of ones, TF32 (10-bit mantissa)
#      squares summed in float32;
#   4  on the tensor cores: q^T q and k^T k beside q^T k, from the same shared-memory tiles, their
#      diagonals kept after the loop (exact float16 products, float32 sums, fewer instructions than
#      3); two more [D_PAD, D_PAD] accumulators, so at D_PAD 128 only 8 warps fit.
# Summing each tile's squares with tl.sum across the warps instead costs shuffles and barriers
# every iteration. Tiles the autotuner tries, (BLOCK_N, warps, stages, SQUARES); at D_PAD 128
# (one-head levels at 96 channels) a launch leaves out what spills registers there
# (:func:`fits_registers`; a CPU test compiles every kept tile at D_PAD 64 and 128 for sm_90, sm_80
# and sm_87).
TILES = ((64, 4, 2, 4), (64, 4, 3, 4), (64, 8, 3, 4), (64, 8, 4, 4), (128, 8, 3, 4), (64, 8, 3, 3), (64, 8, 2, 3))


def fits_registers(d_pad: int, warps: int, stages: int, squares: int, capability: int = FALLBACK_CAPABILITY) -> bool:
    """Whether a tile of ``warps`` warps (``stages``, ``SQUARES``) holds the accumulators of heads
    padded to ``d_pad`` channels on a card of ``capability``: at D_PAD 128 only 8 warps do, and before
    Hopper (sm_80, sm_87) only with the norms on the ones-block products (SQUARES 3) and 2 stages."""
    if d_pad <= 64:
        return True
    return warps >= 8 and (capability >= 90 or (squares == 3 and stages <= 2))


def _fits_launch(config: Any, arguments: dict[str, Any]) -> bool:
    return fits_registers(arguments["D_PAD"], config.num_warps, config.num_stages, config.kwargs["SQUARES"],
                          launch_capability(arguments))


if triton is not None:

    @autotune(tile_configs(("BLOCK_N", "num_warps", "num_stages", "SQUARES"), TILES), key=["N", "ROWS", "HEADS", "D"],
              fits=_fits_launch)
    @triton.jit
    def head_gram_kernel(
        qk_ptr, out_ptr,
        N, ROWS, HEADS,
        stride_b, stride_c, stride_n,
        D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_N: tl.constexpr, SQUARES: tl.constexpr,
    ):
        # Program (bh, s): image b = bh // HEADS, head h = bh % HEADS, pixels [s ROWS, s ROWS + ROWS)
        # of N. q_h is channels [h D, h D + D) of qk, k_h channels [C + h D, C + h D + D).
        bh = tl.program_id(0)
        part = tl.program_id(1)
        b = bh // HEADS
        h = bh % HEADS
        cols = tl.arange(0, D_PAD)
        col_ok = cols < D
        start = part * ROWS
        end = tl.minimum(start + ROWS, N)
        # Pointers to the first tile's rows; advanced by BLOCK_N rows an iteration. 64-bit offsets:
        # a (B, 2C, N) tensor in channel-major memory passes 2^31 elements at 1920x1080.
        base = qk_ptr + b.to(tl.int64) * stride_b + start.to(tl.int64) * stride_n
        tile_rows = tl.arange(0, BLOCK_N)
        row_offsets = tile_rows[:, None] * stride_n
        q_ptrs = base + (h * D + cols).to(tl.int64)[None, :] * stride_c + row_offsets
        k_ptrs = base + ((HEADS + h) * D + cols).to(tl.int64)[None, :] * stride_c + row_offsets
        gram = tl.zeros((D_PAD, D_PAD), dtype=tl.float32)
        q_mma = tl.zeros((D_PAD, 16), dtype=tl.float32)  # SQUARES 3: sum_n q[n, i]^2 in each of 16 columns
        k_mma = tl.zeros((D_PAD, 16), dtype=tl.float32)
        ones = tl.full((BLOCK_N, 16), 1.0, dtype=tl.float32)
        q_gram = tl.zeros((D_PAD, D_PAD), dtype=tl.float32)  # SQUARES 4
        k_gram = tl.zeros((D_PAD, D_PAD), dtype=tl.float32)
        for n0 in range(start, end, BLOCK_N):
            mask = ((n0 + tile_rows) < end)[:, None] & col_ok[None, :]
            q = tl.load(q_ptrs, mask=mask, other=0.0)  # [BLOCK_N, D_PAD]: rows n, columns q's channels
            k = tl.load(k_ptrs, mask=mask, other=0.0)
            gram = tl.dot(tl.trans(q), k, gram)  # sum_n q[n, i] k[n, j], float32
            if SQUARES == 4:  # q^T q and k^T k on the tensor cores too: their diagonals
                q_gram = tl.dot(tl.trans(q), q, q_gram)
                k_gram = tl.dot(tl.trans(k), k, k_gram)
            else:  # on the tensor cores, TF32 squares summed in float32
                qf, kf = q.to(tl.float32), k.to(tl.float32)
                q_mma = tl.dot(tl.trans(qf * qf), ones, q_mma, input_precision="tf32")
                k_mma = tl.dot(tl.trans(kf * kf), ones, k_mma, input_precision="tf32")
            q_ptrs += BLOCK_N * stride_n
            k_ptrs += BLOCK_N * stride_n
        if SQUARES == 4:
            diagonal = cols[:, None] == cols[None, :]
            q_sq = tl.sum(tl.where(diagonal, q_gram, 0.0), axis=1)
            k_sq = tl.sum(tl.where(diagonal, k_gram, 0.0), axis=1)
        else:
            q_sq = tl.sum(q_mma, axis=1) * 0.0625  # the 16 equal columns
            k_sq = tl.sum(k_mma, axis=1) * 0.0625
        # partials[b, h, part]: (D + 2, D) float32, q_h k_h^T then |q_i|^2 then |k_j|^2
        out = out_ptr + (bh * tl.num_programs(1) + part).to(tl.int64) * ((D + 2) * D)
        tl.store(out + cols[:, None] * D + cols[None, :], gram, mask=col_ok[:, None] & col_ok[None, :])
        tl.store(out + D * D + cols, q_sq, mask=col_ok)
        tl.store(out + (D + 1) * D + cols, k_sq, mask=col_ok)

    # An opaque op for torch.compile (custom_op; the triton_op forms are the packages': see
    # engines.kernels.support.PACKAGED_SUFFIX).
    @torch.library.custom_op("hidiff::head_gram_partials", mutates_args=())
    def _head_gram_partials_op(qk: torch.Tensor, heads: int) -> torch.Tensor:
        return launch_head_gram(head_gram_kernel, qk, heads)

    @_head_gram_partials_op.register_fake
    def _head_gram_partials_shape(qk: torch.Tensor, heads: int) -> torch.Tensor:
        b, two_c, _ = qk.shape
        d = two_c // 2 // heads
        split, _ = head_gram_split_for(qk, heads)
        return torch.empty((b, heads, split, d + 2, d), device=qk.device, dtype=torch.float32)

    @torch.library.triton_op("hidiff::head_gram_partials_packaged", mutates_args=())
    def _head_gram_partials_packaged(qk: torch.Tensor, heads: int) -> torch.Tensor:
        return launch_head_gram(torch.library.wrap_triton(head_gram_kernel), qk, heads)


def launch_head_gram(kernel: Any, qk: torch.Tensor, heads: int, **tile: int) -> torch.Tensor:
    """One launch of ``kernel`` (the autotuned kernel, or its ``.fn`` with an explicit ``tile``:
    BLOCK_N, SQUARES and optionally num_warps / num_stages) on qk (B, 2C, N) of any strides: the partials
    (B, heads, SPLIT, d + 2, d) float32."""
    b, two_c, n = qk.shape
    d = two_c // 2 // heads
    split, rows = head_gram_split_for(qk, heads)
    partials = torch.empty((b, heads, split, d + 2, d), device=qk.device, dtype=torch.float32)
    kernel[(b * heads, split)](qk, partials, n, rows, heads, *qk.stride(), D=d, D_PAD=dot_block(d), **tile)
    return partials


def head_cosine(qk: torch.Tensor, heads: int, eps: float = 1e-12) -> torch.Tensor:
    """cos(q_i, k_j) over the last axis per head: qk (B, 2C, N) with q on channels [0, C) and k on
    [C, 2C), any strides (MDTA's is a channel slice of the channels-last qkv, (B, 3C, N)) ->
    (B, heads, d, d) float32, d = C / heads; equal to ``head_blocks(channel_cosine(qk, eps), heads)``.
    One Triton kernel and a small PyTorch epilogue for float16/bfloat16 CUDA tensors (heads up to
    MAX_HEAD_DIM channels), the PyTorch reference elsewhere."""
    if qk.dim() != 3 or qk.shape[1] % 2 or heads < 1 or (qk.shape[1] // 2) % heads:
        raise ValueError(f"head_cosine expects qk (B, 2C, N), q and k stacked on the channel axis, and a head "
                         f"count dividing C, got qk {tuple(qk.shape)} and heads={heads}")
    if not kernel_runs(qk) or qk.shape[1] // 2 // heads > MAX_HEAD_DIM:
        return head_cosine_reference(qk, heads, eps)
    return head_gram_partials_to_cosine(kernel_op("head_gram_partials")(qk, int(heads)), eps)
