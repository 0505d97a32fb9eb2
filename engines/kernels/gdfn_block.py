"""The feed-forward half of a Transformer block as one Triton kernel, its hidden tensor never in memory.

A block's GDFN (hidiff.restormer.GDFN, with the block's LayerNorm and residual) runs, at every pixel,

    h = W_in LN(x) + b_in                      (2 * HIDDEN channels)
    g = gelu(dw3x3(h)[:HIDDEN]) * dw3x3(h)[HIDDEN:]
    x = x + W_out g + b_out

Per-operation kernels write h (2 * HIDDEN = 5.3 C channels) and g to memory and read them back:
most of a frame's traffic. :func:`gdfn_block` reads x once and writes the result once.

One program owns a tile of TH x TW pixels of an image and the one-pixel ring around it (the
halo, for the 3x3 depthwise filters), and walks the hidden channels in chunks of CHUNK, each with
its gate partners (channels j and j + HIDDEN). Per tile: the halo tile's normalised x goes to a
scratch slot of the program's own; per chunk, the product W_in LN(x) of the halo tile (in blocks
of BLOCK_P pixels; zero outside the image, the depthwise filters' padding) goes to the slot, the
inner pixels read their nine neighbours back from it, gate, and add the chunk's share of W_out g
to a float32 accumulator that stays in registers. The grid is persistent (a few programs per SM,
each looping over tiles), so the slots are rewritten in place and stay in the L1 and L2 caches.
Products on the tensor cores in the input's dtype, accumulated in float32; LayerNorm statistics,
depthwise sums and the gate in float32, as the per-operation kernels compute them. The
LayerNorm's affine is folded into W_in and b_in beforehand
(``engines.kernels.fuse.NormProjection``). No tensor memory accelerator: the kernel compiles for
sm_80 (A100) and sm_87 (Jetson Orin) as for sm_90.

The op is a ``torch.library.custom_op``: ``torch.compile`` calls it as one opaque operation.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engines.kernels.support import autotune, cdiv, dot_block, kernel_runs, sm_count, tile_configs, tl, triton

if triton is not None:
    from engines.kernels.gated_dwconv import gelu
    from engines.kernels.layer_norm import load_rows, normalize


def gdfn_block_reference(x: torch.Tensor, w_in_t: torch.Tensor, b_in: torch.Tensor, dw_weight: torch.Tensor,
                         dw_bias: torch.Tensor | None, w_out_t: torch.Tensor, b_out: torch.Tensor | None,
                         eps: float, bias_free: bool) -> torch.Tensor:
    """x + W_out gate(dw3x3(W_in LN(x) + b_in)) + b_out in PyTorch, float32 inside: x (B, C, H, W),
    w_in_t (C, 2 * HIDDEN) with LN's affine folded in, b_in (2 * HIDDEN,), dw_weight
    (2 * HIDDEN, 1, 3, 3), dw_bias (2 * HIDDEN,) or None, w_out_t (HIDDEN, C), b_out (C,) or None."""
    xf = x.float().permute(0, 2, 3, 1)
    var = xf.var(-1, keepdim=True, unbiased=False)
    centred = xf if bias_free else xf - xf.mean(-1, keepdim=True)
    hidden = ((centred * torch.rsqrt(var + eps)) @ w_in_t.float() + b_in.float()).permute(0, 3, 1, 2)
    z = F.conv2d(hidden, dw_weight.float(), None if dw_bias is None else dw_bias.float(), padding=1,
                 groups=hidden.shape[1])
    z1, z2 = z.chunk(2, dim=1)
    y = (F.gelu(z1) * z2).permute(0, 2, 3, 1) @ w_out_t.float()
    if b_out is not None:
        y = y + b_out.float()
    return (xf + y).permute(0, 3, 1, 2).to(x.dtype)


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


def tile_fits(th: int, tw: int, block_p: int, block_c: int, hopper: bool = True, chunk: int = 16,
              warps: int = 8) -> bool:
    """Whether a tile of th x tw pixels with BLOCK_P-pixel blocks and CHUNK-channel chunks, run by
    ``warps`` warps, holds a (padded) width of block_c channels, on a Hopper GPU or
    (``hopper=False``) an earlier one, where 16 warps and 32-channel chunks of maps of 128
    channels or more spill registers."""
    if not hopper and (warps > 8 or (chunk >= 32 and block_c >= 128)):
        return False
    return th * tw * block_c <= MAX_TILE_VALUES and block_p * block_c <= MAX_TILE_VALUES


def halo_blocks(th: int, tw: int, block_p: int) -> int:
    """How many BLOCK_P-pixel blocks cover a tile with its one-pixel ring."""
    return cdiv((th + 2) * (tw + 2), block_p)


def slot_size(th: int, tw: int, block_p: int, chunk: int, block_c: int) -> int:
    """Elements of one program's scratch slot: the halo tile's normalised x, then one chunk of hidden channels
    and their gate partners."""
    return halo_blocks(th, tw, block_p) * block_p * (block_c + 2 * chunk)


def _fits(config: Any, arguments: dict[str, Any]) -> bool:
    meta = config.kwargs
    x = arguments["x_ptr"]
    hopper = x.device.type != "cuda" or torch.cuda.get_device_capability(x.device)[0] >= 9
    return tile_fits(meta["TH"], meta["TW"], meta["BLOCK_P"], arguments["BLOCK_C"], hopper, meta["CHUNK"],
                     config.num_warps)


if triton is not None:

    @triton.jit
    def _halo_pixels(blk, r0, c0, H, W, TH: tl.constexpr, TW: tl.constexpr, BLOCK_P: tl.constexpr):
        """Block ``blk`` of the halo tile's pixels: their slot index, image row and column, and whether each lies
        inside the image (and the halo tile)."""
        q = blk * BLOCK_P + tl.arange(0, BLOCK_P)
        row = r0 - 1 + q // (TW + 2)
        col = c0 - 1 + q % (TW + 2)
        inside = (q < (TH + 2) * (TW + 2)) & (row >= 0) & (row < H) & (col >= 0) & (col < W)
        return q, row, col, inside

    @autotune(tile_configs(("TH", "TW", "BLOCK_P", "CHUNK", "num_warps", "PER_SM", "num_stages"),
                           [(*tile, 1) for tile in TILES]), key=["H", "W", "C"], fits=_fits)
    @triton.jit
    def gdfn_block_kernel(
        x_ptr, w_in_ptr, b_in_ptr, dw_w_ptr, dw_b_ptr, w_out_ptr, b_out_ptr, y_ptr, scratch_ptr,
        B, H, W, eps, slot_elements,
        C: tl.constexpr, HIDDEN: tl.constexpr, BLOCK_C: tl.constexpr, BIAS_FREE: tl.constexpr,
        HAS_DW_BIAS: tl.constexpr, HAS_OUT_BIAS: tl.constexpr,
        TH: tl.constexpr, TW: tl.constexpr, BLOCK_P: tl.constexpr, CHUNK: tl.constexpr, PER_SM: tl.constexpr,
    ):
        # x and y (B, H, W, C) contiguous; w_in (C, 2 * HIDDEN); dw_w (2 * HIDDEN, 9); w_out (HIDDEN, C).
        # PER_SM only sizes the grid (the launcher's).
        HALO_BLOCKS: tl.constexpr = ((TH + 2) * (TW + 2) + BLOCK_P - 1) // BLOCK_P
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
            image = (tile // tiles_per_image).to(tl.int64) * H * W * C
            r0 = (tile % tiles_per_image) // tiles_w * TH
            c0 = (tile % tiles_w) * TW
            # LN(x) of the halo tile, zeros outside the image, into the slot.
            for blk in range(HALO_BLOCKS):
                q, row, col, inside = _halo_pixels(blk, r0, c0, H, W, TH, TW, BLOCK_P)
                xr = load_rows(x_ptr + image, row * W + col, inside, cs, c_ok, C)
                tl.store(xhat_slot + q[:, None] * BLOCK_C + cs[None, :], normalize(xr, c_ok, C, eps, BIAS_FREE).to(dtype))
            tl.debug_barrier()
            acc = tl.zeros((TH * TW, BLOCK_C), dtype=tl.float32)
            for j0 in range(0, HIDDEN, CHUNK):
                js = j0 + hs
                j_ok = js < HIDDEN
                w_mask = c_ok[:, None] & j_ok[None, :]
                w1 = tl.load(w_in_ptr + cs[:, None] * (2 * HIDDEN) + js[None, :], mask=w_mask, other=0.0)
                w2 = tl.load(w_in_ptr + cs[:, None] * (2 * HIDDEN) + HIDDEN + js[None, :], mask=w_mask, other=0.0)
                bias1 = tl.load(b_in_ptr + js, mask=j_ok, other=0.0).to(tl.float32)[None, :]
                bias2 = tl.load(b_in_ptr + HIDDEN + js, mask=j_ok, other=0.0).to(tl.float32)[None, :]
                # The chunk's hidden channels over the halo tile: zero outside the image (the
                # depthwise filters' padding), into the slot.
                for blk in range(HALO_BLOCKS):
                    q, row, col, inside = _halo_pixels(blk, r0, c0, H, W, TH, TW, BLOCK_P)
                    a = tl.load(xhat_slot + q[:, None] * BLOCK_C + cs[None, :])
                    h1 = tl.where(inside[:, None], tl.dot(a, w1) + bias1, 0.0)
                    h2 = tl.where(inside[:, None], tl.dot(a, w2) + bias2, 0.0)
                    dst = hidden_slot + q[:, None] * (2 * CHUNK) + hs[None, :]
                    tl.store(dst, h1.to(dtype))
                    tl.store(dst + CHUNK, h2.to(dtype))
                tl.debug_barrier()
                # Depthwise 3x3 and gate at the inner pixels, from their nine neighbours in the slot.
                d1 = tl.zeros((TH * TW, CHUNK), dtype=tl.float32)
                d2 = tl.zeros((TH * TW, CHUNK), dtype=tl.float32)
                for t in range(9):  # a loop, not unrolled: 18 tiles of loads in flight would spill registers
                    src = hidden_slot + ((pi + t // 3) * (TW + 2) + pj + t % 3)[:, None] * (2 * CHUNK) + hs[None, :]
                    tap1 = tl.load(dw_w_ptr + js * 9 + t, mask=j_ok, other=0.0).to(tl.float32)[None, :]
                    tap2 = tl.load(dw_w_ptr + (HIDDEN + js) * 9 + t, mask=j_ok, other=0.0).to(tl.float32)[None, :]
                    d1 += tl.load(src).to(tl.float32) * tap1
                    d2 += tl.load(src + CHUNK).to(tl.float32) * tap2
                if HAS_DW_BIAS:
                    d1 += tl.load(dw_b_ptr + js, mask=j_ok, other=0.0).to(tl.float32)[None, :]
                    d2 += tl.load(dw_b_ptr + HIDDEN + js, mask=j_ok, other=0.0).to(tl.float32)[None, :]
                tl.debug_barrier()  # the next chunk rewrites the slot
                w_o = tl.load(w_out_ptr + js[:, None] * C + cs[None, :], mask=j_ok[:, None] & c_ok[None, :], other=0.0)
                acc = tl.dot((gelu(d1) * d2).to(dtype), w_o, acc)
            # The residual and the bias; the inner pixels inside the image are stored.
            row = r0 + pi
            col = c0 + pj
            mask = ((row < H) & (col < W))[:, None] & c_ok[None, :]
            offsets = image + (row * W + col).to(tl.int64)[:, None] * C + cs[None, :]
            y = acc + out_bias[None, :] + tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            tl.store(y_ptr + offsets, y.to(dtype), mask=mask)

    @torch.library.custom_op("hidiff::gdfn_block", mutates_args=())
    def _gdfn_block_op(x: torch.Tensor, w_in_t: torch.Tensor, b_in: torch.Tensor, dw_weight: torch.Tensor,
                       dw_bias: torch.Tensor | None, w_out_t: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                       bias_free: bool) -> torch.Tensor:
        return launch_gdfn_block(gdfn_block_kernel, x, w_in_t, b_in, dw_weight, dw_bias, w_out_t, b_out, eps, bias_free)

    @_gdfn_block_op.register_fake
    def _gdfn_block_shape(x: torch.Tensor, w_in_t: torch.Tensor, b_in: torch.Tensor, dw_weight: torch.Tensor,
                          dw_bias: torch.Tensor | None, w_out_t: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                          bias_free: bool) -> torch.Tensor:
        return torch.empty_like(x, memory_format=torch.channels_last)


def launch_gdfn_block(kernel: Any, x: torch.Tensor, w_in_t: torch.Tensor, b_in: torch.Tensor, dw_weight: torch.Tensor,
                      dw_bias: torch.Tensor | None, w_out_t: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                      bias_free: bool, **tile: int) -> torch.Tensor:
    """One launch of ``kernel`` (the autotuned kernel, or its ``.fn`` with an explicit ``tile``):
    x is read channels-last (copied first if it is not), the result is written channels-last."""
    b, c, h, w = x.shape
    hidden = w_out_t.shape[0]
    block_c = dot_block(c)
    x = x.contiguous(memory_format=torch.channels_last)
    out = torch.empty_like(x, memory_format=torch.channels_last)
    tiles = [dict(zip(("TH", "TW", "BLOCK_P", "CHUNK"), t[:4], strict=True)) | {"PER_SM": t[5]} for t in TILES]
    candidates = [tile] if tile else [t for t in tiles if tile_fits(t["TH"], t["TW"], t["BLOCK_P"], block_c)]  # a superset
    if not candidates:
        raise ValueError(f"gdfn_block: no tile holds {c} channels")
    slot = max(slot_size(t["TH"], t["TW"], t["BLOCK_P"], t["CHUNK"], block_c) for t in candidates)
    programs = sm_count(x.device) * max(t["PER_SM"] for t in candidates)
    scratch = torch.empty(programs * slot, device=x.device, dtype=x.dtype)

    def grid(meta: dict[str, int]) -> tuple[int]:
        tiles_total = b * cdiv(h, meta["TH"]) * cdiv(w, meta["TW"])
        return (min(tiles_total, sm_count(x.device) * meta["PER_SM"]),)

    kernel[grid](x, w_in_t.contiguous(), b_in.contiguous(), dw_weight.reshape(-1, 9).contiguous(),
                 dw_bias if dw_bias is not None else b_in, w_out_t.contiguous(), b_out if b_out is not None else b_in,
                 out, scratch, b, h, w, eps, slot,
                 C=c, HIDDEN=hidden, BLOCK_C=block_c, BIAS_FREE=bias_free, HAS_DW_BIAS=dw_bias is not None,
                 HAS_OUT_BIAS=b_out is not None, **tile)
    return out


def gdfn_block(x: torch.Tensor, w_in_t: torch.Tensor, b_in: torch.Tensor, dw_weight: torch.Tensor,
               dw_bias: torch.Tensor | None, w_out_t: torch.Tensor, b_out: torch.Tensor | None, eps: float,
               bias_free: bool = False) -> torch.Tensor:
    """x + W_out gate(dw3x3(W_in LN(x) + b_in)) + b_out for x (B, C, H, W): w_in_t (C, 2 * HIDDEN)
    and b_in (2 * HIDDEN,) with LN's affine folded in, dw_weight (2 * HIDDEN, 1, 3, 3), dw_bias
    (2 * HIDDEN,) or None, w_out_t (HIDDEN, C), b_out (C,) or None.

    One Triton kernel on float16/bfloat16 CUDA tensors (channels-last x is read in place), the
    PyTorch reference elsewhere. Returns (B, C, H, W) in x's dtype, channels-last on CUDA."""
    c = x.shape[1] if x.dim() == 4 else -1
    hidden = w_out_t.shape[0] if w_out_t.dim() == 2 else -1
    if (c < 0 or hidden < 0 or tuple(w_in_t.shape) != (c, 2 * hidden) or tuple(b_in.shape) != (2 * hidden,)
            or tuple(dw_weight.shape) != (2 * hidden, 1, 3, 3) or tuple(w_out_t.shape) != (hidden, c)):
        raise ValueError(f"gdfn_block expects x (B, C, H, W), w_in_t (C, 2H), b_in (2H,), dw_weight (2H, 1, 3, 3) "
                         f"and w_out_t (H, C), got {tuple(x.shape)}, {tuple(w_in_t.shape)}, {tuple(b_in.shape)}, "
                         f"{tuple(dw_weight.shape)} and {tuple(w_out_t.shape)}")
    if not kernel_runs(x, w_in_t, w_out_t):
        return gdfn_block_reference(x, w_in_t, b_in, dw_weight, dw_bias, w_out_t, b_out, eps, bias_free)
    return torch.ops.hidiff.gdfn_block(x, w_in_t, b_in, dw_weight, dw_bias, w_out_t, b_out, float(eps), bool(bias_free))
