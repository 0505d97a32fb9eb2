"""Halo tiles: the machinery of the whole-block kernels, and the kernel that runs a block's half
over them.

A 3x3 depthwise convolution of a projected map, dw3x3(W_in LN(x) + b_in), needs each pixel's eight
neighbours. One program owns a tile of TH x TW pixels of an image and the one-pixel ring around it
(the halo): it writes the halo tile's normalised x to a scratch slot of its own
(:func:`normalize_halo`), projects it through columns of W_in into the slot, zero outside the
image, the depthwise filters' padding (:func:`project_halo`), and runs the depthwise filters at the
inner pixels from their nine neighbours there (:func:`depthwise_inner`). The projected map never
reaches memory: a slot is rewritten per tile and chunk of channels, and stays in the L1 and L2
caches. Shared by :mod:`engines.kernels.gdfn_block` and :mod:`engines.kernels.mdta_block`.

:data:`halo_block_kernel` runs, over a persistent grid of such tiles (a few programs per SM, each
looping over tiles),

    y = x + W_out f(dw3x3(W_in LN(x) + b_in)) + b_out

over HIDDEN projected channels in chunks of CHUNK: with ``GATE`` f is GDFN's gate,
gelu(channel j) * channel j + HIDDEN; without, the identity (MDTA's v, with W_out an image's own
matrix). The chunk's share of W_out f(.) goes to a float32 accumulator that stays in registers.
Products on the tensor cores in the input's dtype, accumulated in float32; LayerNorm statistics
and the gate in float32. The depthwise sums of a float16 map are float16 fused multiply-adds, two
channels an instruction with no conversions, from taps laid out by :func:`depthwise_taps` (a
thread's channels of a tap in one load): their rounding adds less error than float16's rounding
of the block's output. Other dtypes are filtered in float32. No tensor memory accelerator: the
kernels compile for sm_80 (A100) and sm_87 (Jetson Orin) as for sm_90.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engines.kernels.support import (
    autotune,
    cdiv,
    dot_block,
    empty_channels_last,
    launch_capability,
    sm_count,
    tile_configs,
    tl,
    triton,
)

if triton is not None:
    from engines.kernels.gated_dwconv import gelu
    from engines.kernels.layer_norm import load_rows, normalize

# The tiles the autotuner tries: (TH, TW, BLOCK_P, CHUNK, warps, programs per SM), one software
# pipeline stage. A tile's accumulator is TH * TW x C float32 values in registers, so wide maps
# take small tiles: a launch keeps the tiles whose accumulator and pixel blocks hold at most
# MAX_TILE_VALUES values (C padded to a power of two), 64 KiB of float32 over the program. Each
# tile, at the widest map it takes on a GPU, fits its registers without spilling (a CPU test
# compiles them for sm_80, sm_87 and sm_90): 16 warps (twice the warps an SM has to switch
# between while products and scratch loads wait) only on Hopper.
TILES = ((16, 16, 64, 32, 8, 1), (8, 16, 64, 32, 8, 1), (8, 16, 64, 16, 8, 1), (8, 8, 64, 32, 8, 2),
         (4, 8, 32, 16, 8, 2),
         (16, 16, 64, 32, 16, 1), (8, 16, 64, 32, 16, 1), (8, 16, 64, 64, 16, 1), (8, 8, 64, 32, 16, 1))
MAX_TILE_VALUES = 128 * 128
TAP_ALIGN = 8  # channels a row of the depthwise taps is padded to: 16 bytes of float16


def tile_fits(th: int, tw: int, block_p: int, block_c: int, hopper: bool = True, chunk: int = 16,
              warps: int = 8) -> bool:
    """Whether a tile of th x tw pixels with BLOCK_P-pixel blocks and CHUNK-channel chunks, run by
    ``warps`` warps, holds a (padded) width of block_c channels, on a Hopper GPU or
    (``hopper=False``) an earlier one, where 16 warps, and 32-channel chunks of maps of 128
    channels or more or of tiles of 64 pixels, spill registers; 16 warps spill on any GPU beyond 128
    channels."""
    if not hopper and (warps > 8 or (chunk >= 32 and (block_c >= 128 or th * tw <= 64))):
        return False
    if warps > 8 and block_c > 128:  # 16 warps hold 128 registers a thread: at 256 channels they spill
        return False
    return th * tw * block_c <= MAX_TILE_VALUES and block_p * block_c <= MAX_TILE_VALUES


def width_fits(channels: int) -> bool:
    """Whether some tile of :data:`TILES` holds a map of ``channels`` channels (up to 512: wider
    maps take the PyTorch references)."""
    return any(tile_fits(t[0], t[1], t[2], dot_block(channels)) for t in TILES)


def tap_group(channels: int) -> int:
    """The width of a group of ``channels`` channels in :func:`depthwise_taps`: a multiple of TAP_ALIGN."""
    return cdiv(channels, TAP_ALIGN) * TAP_ALIGN


def depthwise_taps(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A depthwise 3x3 convolution's weight (N, 1, 3, 3) in the kernels' layout: (9, groups *
    tap_group(N / groups)), row t the t-th tap (row-major over the 3x3 window) of every channel, its
    N channels in ``groups`` equal groups (GDFN's two gate halves, MDTA's q, k and v), each padded
    with zeros to a multiple of TAP_ALIGN channels. A tap's channels are contiguous and each group
    starts 16 bytes on (in float16), so that a thread loads its channels' tap in one instruction.
    Made once, beside the folded weights."""
    n = weight.shape[0]
    if tuple(weight.shape[1:]) != (1, 3, 3) or groups < 1 or n % groups:
        raise ValueError(f"depthwise_taps expects a depthwise 3x3 weight (N, 1, 3, 3) with N a multiple of "
                         f"{groups} groups, got {tuple(weight.shape)}")
    width = n // groups
    grouped = F.pad(weight.reshape(groups, width, 9), (0, 0, 0, tap_group(width) - width))
    return grouped.permute(2, 0, 1).reshape(9, -1).contiguous()


def depthwise_weight(taps: torch.Tensor, channels: int, groups: int) -> torch.Tensor:
    """The (channels, 1, 3, 3) convolution weight that :func:`depthwise_taps` made ``taps`` of."""
    return taps.reshape(9, groups, -1)[:, :, : channels // groups].reshape(9, channels).t().reshape(channels, 1, 3, 3)


def halo_blocks(th: int, tw: int, block_p: int) -> int:
    """How many BLOCK_P-pixel blocks cover a tile with its one-pixel ring."""
    return cdiv((th + 2) * (tw + 2), block_p)


def slot_size(th: int, tw: int, block_p: int, chunk: int, block_c: int) -> int:
    """Elements of one program's scratch slot: the halo tile's normalised x, then two chunks of
    projected channels (a chunk and its gate partners, or q and k)."""
    return halo_blocks(th, tw, block_p) * block_p * (block_c + 2 * chunk)


def _fits(config: Any, arguments: dict[str, Any]) -> bool:
    meta = config.kwargs
    return tile_fits(meta["TH"], meta["TW"], meta["BLOCK_P"], arguments["BLOCK_C"], launch_capability(arguments) >= 90,
                     meta["CHUNK"], config.num_warps)


if triton is not None:

    @triton.jit
    def halo_pixels(blk, r0, c0, H, W, TH: tl.constexpr, TW: tl.constexpr, BLOCK_P: tl.constexpr):
        """Block ``blk`` of the halo tile's pixels: their slot index, image row and column, and whether each lies
        inside the image (and the halo tile)."""
        q = blk * BLOCK_P + tl.arange(0, BLOCK_P)
        row = r0 - 1 + q // (TW + 2)
        col = c0 - 1 + q % (TW + 2)
        inside = (q < (TH + 2) * (TW + 2)) & (row >= 0) & (row < H) & (col >= 0) & (col < W)
        return q, row, col, inside

    @triton.jit
    def normalize_halo(x_image, xhat_slot, r0, c0, H, W, cs, c_ok, eps, C: tl.constexpr, BIAS_FREE: tl.constexpr,
                       TH: tl.constexpr, TW: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        """LN(x) of the halo tile of the image at ``x_image`` (H, W, C), zeros outside the image, into the slot."""
        HALO_BLOCKS: tl.constexpr = ((TH + 2) * (TW + 2) + BLOCK_P - 1) // BLOCK_P
        for blk in range(HALO_BLOCKS):
            q, row, col, inside = halo_pixels(blk, r0, c0, H, W, TH, TW, BLOCK_P)
            xr = load_rows(x_image, row * W + col, inside, cs, c_ok, C)
            tl.store(xhat_slot + q[:, None] * BLOCK_C + cs[None, :],
                     normalize(xr, c_ok, C, eps, BIAS_FREE).to(xhat_slot.dtype.element_ty))

    @triton.jit
    def project_halo(xhat_slot, hidden_slot, w_in_ptr, b_in_ptr, base1, base2, count, r0, c0, H, W, cs, c_ok,
                     IN_COLS: tl.constexpr, PAIR: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, CH: tl.constexpr):
        """x_hat W_in[:, base1 + i] + b_in[base1 + i] over the halo tile for the CH channels i (zeros
        from i = ``count`` on, and outside the image) into the slot's first CH columns; with PAIR
        base2 + i into the next CH, in the same product (one tensor-core product of 2 CH columns a
        block of pixels, one store). W_in is (C, IN_COLS)."""
        HALO_BLOCKS: tl.constexpr = ((TH + 2) * (TW + 2) + BLOCK_P - 1) // BLOCK_P
        N: tl.constexpr = CH * (1 + PAIR)
        ns = tl.arange(0, N)
        i = ns % CH
        cols = tl.where(ns < CH, base1, base2) + i
        ok = i < count
        w = tl.load(w_in_ptr + cs[:, None] * IN_COLS + cols[None, :], mask=c_ok[:, None] & ok[None, :], other=0.0)
        bias = tl.load(b_in_ptr + cols, mask=ok, other=0.0).to(tl.float32)[None, :]
        for blk in range(HALO_BLOCKS):
            q, row, col, inside = halo_pixels(blk, r0, c0, H, W, TH, TW, BLOCK_P)
            a = tl.load(xhat_slot + q[:, None] * BLOCK_C + cs[None, :])
            h = tl.where(inside[:, None], tl.dot(a, w) + bias, 0.0)
            tl.store(hidden_slot + q[:, None] * (2 * CH) + ns[None, :], h.to(hidden_slot.dtype.element_ty))

    @triton.jit
    def unseen(n: tl.constexpr):
        """n, as a value the compilers cannot see (n times the grid's third axis, 1 at every launch of
        these kernels): ptxas unrolls a short loop over a constant count, this one it keeps."""
        return n * tl.num_programs(2)

    @triton.jit
    def depthwise_inner(hidden_slot, taps_ptr, dw_b_ptr, cols1, cols2, taps1, taps2, col_ok, pi, pj,
                        TAP_ROW: tl.constexpr, PAIR: tl.constexpr, HAS_DW_BIAS: tl.constexpr, TH: tl.constexpr,
                        TW: tl.constexpr, CH: tl.constexpr):
        """The depthwise 3x3 filters of the slot's projected channels ``cols1`` (and with PAIR
        ``cols2``), their columns ``taps1`` and ``taps2`` in the taps (9, TAP_ROW) of
        :func:`depthwise_taps`, at the inner pixels (row ``pi``, column ``pj`` of the tile), from
        their nine neighbours in the slot: float32 (TH * TW, CH) each (the second zeros without
        PAIR). Float16 maps are filtered in float16 (fused multiply-adds on two channels an
        instruction, no conversions), others in float32."""
        dtype = hidden_slot.dtype.element_ty
        if dtype == tl.float16:
            d1 = tl.zeros((TH * TW, CH), dtype=tl.float16)
            d2 = tl.zeros((TH * TW, CH), dtype=tl.float16)
        else:
            d1 = tl.zeros((TH * TW, CH), dtype=tl.float32)
            d2 = tl.zeros((TH * TW, CH), dtype=tl.float32)
        hs = tl.arange(0, CH)
        for t in range(unseen(9)):  # a loop: unrolled, its 18 tiles of loads spill registers at 96 and 192 channels
            src = hidden_slot + ((pi + t // 3) * (TW + 2) + pj + t % 3)[:, None] * (2 * CH) + hs[None, :]
            tap1 = tl.load(taps_ptr + t * TAP_ROW + taps1, mask=col_ok, other=0.0).to(d1.dtype)[None, :]
            d1 = tl.fma(tl.load(src).to(d1.dtype), tap1, d1)
            if PAIR:
                tap2 = tl.load(taps_ptr + t * TAP_ROW + taps2, mask=col_ok, other=0.0).to(d2.dtype)[None, :]
                d2 = tl.fma(tl.load(src + CH).to(d2.dtype), tap2, d2)
        s1 = d1.to(tl.float32)
        s2 = d2.to(tl.float32)
        if HAS_DW_BIAS:
            s1 += tl.load(dw_b_ptr + cols1, mask=col_ok, other=0.0).to(tl.float32)[None, :]
            if PAIR:
                s2 += tl.load(dw_b_ptr + cols2, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        return s1, s2

    @autotune(tile_configs(("TH", "TW", "BLOCK_P", "CHUNK", "num_warps", "PER_SM", "num_stages"),
                           [(*tile, 1) for tile in TILES]), key=["H", "W", "C", "HIDDEN", "GATE"], fits=_fits)
    @triton.jit
    def halo_block_kernel(
        x_ptr, w_in_ptr, b_in_ptr, taps_ptr, dw_b_ptr, w_out_ptr, b_out_ptr, y_ptr, scratch_ptr,
        B, H, W, eps, slot_elements,
        C: tl.constexpr, HIDDEN: tl.constexpr, IN_COLS: tl.constexpr, IN_OFFSET: tl.constexpr, TAP_ROW: tl.constexpr,
        GATE: tl.constexpr, OUT_PER_IMAGE: tl.constexpr,
        BLOCK_C: tl.constexpr, BIAS_FREE: tl.constexpr, HAS_DW_BIAS: tl.constexpr, HAS_OUT_BIAS: tl.constexpr,
        TH: tl.constexpr, TW: tl.constexpr, BLOCK_P: tl.constexpr, CHUNK: tl.constexpr, PER_SM: tl.constexpr,
    ):
        # x and y (B, H, W, C) contiguous; w_in (C, IN_COLS), b_in, dw_b (IN_COLS,), taps (9, TAP_ROW),
        # in IN_COLS / HIDDEN groups of HIDDEN channels, each TAP_ROW / (IN_COLS / HIDDEN) wide;
        # projected channel j < HIDDEN is column IN_OFFSET + j, its gate partner IN_OFFSET + HIDDEN + j;
        # w_out (HIDDEN, C), or with OUT_PER_IMAGE (B, HIDDEN, C). PER_SM only sizes the grid (the launcher's).
        HALO_BLOCKS: tl.constexpr = ((TH + 2) * (TW + 2) + BLOCK_P - 1) // BLOCK_P
        TAP_GROUP: tl.constexpr = TAP_ROW // (IN_COLS // HIDDEN)
        dtype = x_ptr.dtype.element_ty
        tiles_w = tl.cdiv(W, TW)
        tiles_per_image = tl.cdiv(H, TH) * tiles_w
        cs = tl.arange(0, BLOCK_C)
        c_ok = cs < C
        hs = tl.arange(0, CHUNK)
        xhat_slot = scratch_ptr + tl.program_id(0).to(tl.int64) * slot_elements
        hidden_slot = xhat_slot + HALO_BLOCKS * BLOCK_P * BLOCK_C
        p = tl.arange(0, TH * TW)  # the inner pixels, row by row
        pi = p // TW
        pj = p % TW
        out_bias = tl.zeros((BLOCK_C,), dtype=tl.float32)
        if HAS_OUT_BIAS:
            out_bias = tl.load(b_out_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)
        for tile in range(tl.program_id(0), B * tiles_per_image, tl.num_programs(0)):
            batch = tile // tiles_per_image
            image = batch.to(tl.int64) * H * W * C
            r0 = (tile % tiles_per_image) // tiles_w * TH
            c0 = (tile % tiles_w) * TW
            normalize_halo(x_ptr + image, xhat_slot, r0, c0, H, W, cs, c_ok, eps, C, BIAS_FREE, TH, TW, BLOCK_P,
                           BLOCK_C)
            tl.debug_barrier()
            acc = tl.zeros((TH * TW, BLOCK_C), dtype=tl.float32)
            w_out_image = w_out_ptr
            if OUT_PER_IMAGE:
                w_out_image += batch * (HIDDEN * C)
            for j0 in range(0, HIDDEN, CHUNK):
                js = j0 + hs
                j_ok = js < HIDDEN
                project_halo(xhat_slot, hidden_slot, w_in_ptr, b_in_ptr, IN_OFFSET + j0, IN_OFFSET + HIDDEN + j0,
                             HIDDEN - j0, r0, c0, H, W, cs, c_ok, IN_COLS, GATE, TH, TW, BLOCK_P, BLOCK_C, CHUNK)
                tl.debug_barrier()
                tap_cols = IN_OFFSET // HIDDEN * TAP_GROUP + js
                d1, d2 = depthwise_inner(hidden_slot, taps_ptr, dw_b_ptr, IN_OFFSET + js, IN_OFFSET + HIDDEN + js,
                                         tap_cols, tap_cols + TAP_GROUP, j_ok, pi, pj, TAP_ROW, GATE, HAS_DW_BIAS,
                                         TH, TW, CHUNK)
                tl.debug_barrier()  # the next chunk rewrites the slot
                if GATE:
                    g = gelu(d1) * d2
                else:
                    g = d1
                w_o = tl.load(w_out_image + js[:, None] * C + cs[None, :], mask=j_ok[:, None] & c_ok[None, :],
                              other=0.0)
                acc = tl.dot(g.to(dtype), w_o, acc)
            # The residual and the bias; the inner pixels inside the image are stored.
            row = r0 + pi
            col = c0 + pj
            mask = ((row < H) & (col < W))[:, None] & c_ok[None, :]
            offsets = image + (row * W + col).to(tl.int64)[:, None] * C + cs[None, :]
            y = acc + out_bias[None, :] + tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            tl.store(y_ptr + offsets, y.to(dtype), mask=mask)


def launch_halo_block(kernel: Any, x: torch.Tensor, w_in_t: torch.Tensor, b_in: torch.Tensor, dw_taps: torch.Tensor,
                      dw_bias: torch.Tensor | None, w_out_t: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                      bias_free: bool, hidden: int, in_offset: int, gate: bool, **tile: int) -> torch.Tensor:
    """One launch of ``kernel`` (the autotuned :data:`halo_block_kernel`, wrapped or not, or its
    ``.fn`` with an explicit ``tile``): w_in_t (C, IN_COLS), b_in (IN_COLS,), dw_taps
    (:func:`depthwise_taps` of IN_COLS / hidden groups), w_out_t (hidden, C) shared or (B, hidden, C)
    per image. x is read channels-last (copied first if it is not), the result is written
    channels-last."""
    b, c, h, w = x.shape
    block_c = dot_block(c)
    x = x.contiguous(memory_format=torch.channels_last)
    out = empty_channels_last(x)
    tiles = [dict(zip(("TH", "TW", "BLOCK_P", "CHUNK"), t[:4], strict=True)) | {"PER_SM": t[5]} for t in TILES]
    candidates = [tile] if tile else [t for t in tiles if tile_fits(t["TH"], t["TW"], t["BLOCK_P"], block_c)]  # a superset
    if not candidates:
        raise ValueError(f"halo_block: no tile holds {c} channels")
    slot = max(slot_size(t["TH"], t["TW"], t["BLOCK_P"], t["CHUNK"], block_c) for t in candidates)
    programs = sm_count(x.device) * max(t["PER_SM"] for t in candidates)
    scratch = torch.empty(programs * slot, device=x.device, dtype=x.dtype)
    w_out_t = w_out_t.contiguous()

    def grid(meta: dict[str, int]) -> tuple[int]:
        tiles_total = b * cdiv(h, meta["TH"]) * cdiv(w, meta["TW"])
        return (min(tiles_total, sm_count(x.device) * meta["PER_SM"]),)

    kernel[grid](x, w_in_t.contiguous(), b_in.contiguous(), dw_taps.contiguous(),
                 dw_bias if dw_bias is not None else b_in, w_out_t, b_out if b_out is not None else b_in,
                 out, scratch, b, h, w, eps, slot,
                 C=c, HIDDEN=hidden, IN_COLS=w_in_t.shape[1], IN_OFFSET=in_offset, TAP_ROW=dw_taps.shape[1], GATE=gate,
                 OUT_PER_IMAGE=w_out_t.dim() == 3, BLOCK_C=block_c,
                 BIAS_FREE=bias_free, HAS_DW_BIAS=dw_bias is not None, HAS_OUT_BIAS=b_out is not None, **tile)
    return out
