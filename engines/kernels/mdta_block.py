"""The attention half of a Transformer block in two Triton kernels, q, k and v never in memory.

A block's MDTA (hidiff.restormer.MDTA, with the block's LayerNorm and residual) runs

    q, k, v = dw3x3(W_qkv LN(x) + b_qkv)                  (3 C channels)
    attn_h  = softmax(t_h cos(q_h, k_h))                   per head h, over all H x W pixels
    x       = x + W_out blockdiag(attn) v + b_out

The per-operation kernels write q, k and v (3 C channels) twice, after the 1x1 projection and after
the depthwise filters, and read them back. Here:

- pass 1, :data:`mdta_gram_kernel`: each program owns one (image, head) and a share of the image's
  halo tiles (:mod:`engines.kernels.halo_tiles`), computes q_h and k_h inside each tile (LayerNorm,
  1x1, depthwise 3x3) and accumulates q_h k_h^T and the squared norms in float32 without writing
  q or k. Each program writes its partial sums (no atomics: deterministic), in the layout of
  :mod:`engines.kernels.head_gram`, whose epilogue adds them and normalises.
- between the passes, in PyTorch on (C x C) matrices: the softmax of the cosines folded with the
  output projection into one matrix per image, M = W_out blockdiag(attn) (``MDTA.mixing_from_cosine``).
- pass 2: :data:`engines.kernels.halo_tiles.halo_block_kernel` without the gate recomputes v inside
  each tile and adds M v + b_out to x.

Pass 1 reads x once per head (the heads of a tile share it through the L2 cache), pass 2 once
more, and the result is written once. Float16/bfloat16 products on the tensor cores, float32
sums; q and k rounded to the input's dtype before their products, as the per-operation kernels
store them. ``fuse_restormer(whole_mdta=True)`` runs the blocks it fuses this way (no preset does,
until the two passes are faster than the per-operation kernels: docs/benchmarks.md). The ops are
``torch.library.custom_op``s that ``torch.compile`` calls as opaque operations, and ``triton_op``s
(``*_packaged``) that AOTInductor compiles into packages.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engines.kernels.halo_tiles import depthwise_weight, halo_blocks, launch_halo_block, tap_group, width_fits
from engines.kernels.head_gram import head_gram_partials_to_cosine
from engines.kernels.support import (
    autotune,
    cdiv,
    dot_block,
    empty_channels_last,
    kernel_op,
    kernel_runs,
    launch_capability,
    sm_count,
    tile_configs,
    tl,
    triton,
)
from hidiff.restormer import channel_cosine, head_blocks

if triton is not None:
    from engines.kernels.halo_tiles import depthwise_inner, halo_block_kernel, normalize_halo, project_halo

# ------------------------------------------------------------------------------------ references


def mdta_qkv_reference(x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
                       dw_bias: torch.Tensor | None, eps: float, bias_free: bool) -> torch.Tensor:
    """dw3x3(W_qkv LN(x) + b_qkv) in PyTorch, float32: x (B, C, H, W), w_qkv_t (C, 3C) with LN's
    affine folded in, b_qkv (3C,), dw_taps the depthwise filters in the kernels' layout
    (``halo_tiles.depthwise_taps``, 3 groups), dw_bias (3C,) or None -> (B, 3C, H, W)."""
    xf = x.float().permute(0, 2, 3, 1)
    var = xf.var(-1, keepdim=True, unbiased=False)
    centred = xf if bias_free else xf - xf.mean(-1, keepdim=True)
    qkv = ((centred * torch.rsqrt(var + eps)) @ w_qkv_t.float() + b_qkv.float()).permute(0, 3, 1, 2)
    return F.conv2d(qkv, depthwise_weight(dw_taps, qkv.shape[1], 3).float(),
                    None if dw_bias is None else dw_bias.float(), padding=1,
                    groups=qkv.shape[1])


def mdta_cosine_reference(x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
                          dw_bias: torch.Tensor | None, heads: int, eps: float, bias_free: bool) -> torch.Tensor:
    """cos(q_h, k_h) per head, (B, heads, d, d) float32, of the q and k of :func:`mdta_qkv_reference`."""
    c = x.shape[1]
    qk = mdta_qkv_reference(x, w_qkv_t, b_qkv, dw_taps, dw_bias, eps, bias_free)[:, : 2 * c].flatten(2)
    return head_blocks(channel_cosine(qk), heads)


def mdta_apply_reference(x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
                         dw_bias: torch.Tensor | None, mixing: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                         bias_free: bool) -> torch.Tensor:
    """x + M v + b_out in PyTorch, float32 inside: v from :func:`mdta_qkv_reference`, M = ``mixing``
    (B, C, C) per image. x's dtype out."""
    b, c, h, w = x.shape
    v = mdta_qkv_reference(x, w_qkv_t, b_qkv, dw_taps, dw_bias, eps, bias_free)[:, 2 * c:].flatten(2)
    y = torch.bmm(mixing.float(), v).reshape(b, c, h, w)
    if b_out is not None:
        y = y + b_out.float()[:, None, None]
    return (x.float() + y).to(x.dtype)


# ------------------------------------------------------------------------------------ pass 1

# Pass 1's tiles, (TH, TW, BLOCK_P, warps): a program holds q_h k_h^T (D_PAD x D_PAD float32),
# q_h and k_h at its inner pixels (2 x TH * TW x D_PAD float32) and BLOCK_P normalised pixels of all
# C channels at a time. A launch keeps the tiles that hold at most 64 values a thread of each
# (:func:`gram_tile_fits`), and before Hopper half as many normalised values; a CPU test compiles
# each, at the widest map it takes, for sm_90, sm_80 and sm_87 without spills (64-pixel blocks, 4
# warps at 192 channels, and on sm_87 32-pixel blocks at 384 channels, spilled).
GRAM_TILES = ((8, 16, 32, 8), (8, 16, 16, 8))

# The pixels of an image are shared among SPLIT programs per (image, head): about PROGRAMS_PER_SM
# programs per SM over the grid, each with at least MIN_PIXELS pixels (several tiles). Chosen on
# the host from the shape and the SM count alone, so that the partials' shape is known to
# torch.compile's fake tensors before the autotuner picks a tile.
PROGRAMS_PER_SM = 3
MIN_PIXELS = 2048


def gram_tile_fits(th: int, tw: int, block_p: int, warps: int, block_c: int, d_pad: int, hopper: bool = True) -> bool:
    """Whether a pass-1 tile run by ``warps`` warps holds a map of block_c (padded) channels and
    heads of d_pad channels: at most 64 values a thread of each block (32 normalised values a
    thread before Hopper, ``hopper=False``)."""
    values = 64 * 32 * warps
    return block_p * block_c <= (values if hopper else values // 2) and 2 * th * tw * d_pad <= values


def gram_split(b: int, heads: int, h: int, w: int, sms: int) -> int:
    """SPLIT: how many programs share an image's pixels per (image, head)."""
    return max(1, min(cdiv(PROGRAMS_PER_SM * sms, b * heads), cdiv(h * w, MIN_PIXELS)))


def gram_slot_size(th: int, tw: int, block_p: int, block_c: int, d_pad: int) -> int:
    """Elements of one pass-1 program's scratch slot: the halo tile's normalised x, then q_h and k_h."""
    return halo_blocks(th, tw, block_p) * block_p * (block_c + 2 * d_pad)


def _gram_fits(config: Any, arguments: dict[str, Any]) -> bool:
    meta = config.kwargs
    return gram_tile_fits(meta["TH"], meta["TW"], meta["BLOCK_P"], config.num_warps, arguments["BLOCK_C"],
                          arguments["D_PAD"], launch_capability(arguments) >= 90)


if triton is not None:

    @autotune(tile_configs(("TH", "TW", "BLOCK_P", "num_warps", "num_stages"), [(*t, 1) for t in GRAM_TILES]),
              key=["H", "W", "C", "HEADS"], fits=_gram_fits)
    @triton.jit
    def mdta_gram_kernel(
        x_ptr, w_in_ptr, b_in_ptr, taps_ptr, dw_b_ptr, out_ptr, scratch_ptr,
        H, W, eps, slot_elements,
        C: tl.constexpr, TAP_ROW: tl.constexpr, HEADS: tl.constexpr, D: tl.constexpr, D_PAD: tl.constexpr,
        BLOCK_C: tl.constexpr,
        BIAS_FREE: tl.constexpr, HAS_DW_BIAS: tl.constexpr,
        TH: tl.constexpr, TW: tl.constexpr, BLOCK_P: tl.constexpr,
    ):
        # Program (bh, part): image b = bh // HEADS, head h = bh % HEADS, tiles part, part + SPLIT, ...
        # x (B, H, W, C) contiguous; w_in (C, 3C): q_h is column h D + i, k_h column C + h D + i; taps (9, TAP_ROW) in
        # three groups (q, k, v) TAP_ROW / 3 wide.
        HALO_BLOCKS: tl.constexpr = ((TH + 2) * (TW + 2) + BLOCK_P - 1) // BLOCK_P
        dtype = x_ptr.dtype.element_ty
        bh = tl.program_id(0)
        part = tl.program_id(1)
        split = tl.num_programs(1)
        image = (bh // HEADS).to(tl.int64) * H * W * C
        head = bh % HEADS
        tiles_w = tl.cdiv(W, TW)
        cs = tl.arange(0, BLOCK_C)
        c_ok = cs < C
        ds = tl.arange(0, D_PAD)
        d_ok = ds < D
        q_cols = head * D + ds
        k_cols = C + head * D + ds
        xhat_slot = scratch_ptr + (bh * split + part).to(tl.int64) * slot_elements
        qk_slot = xhat_slot + HALO_BLOCKS * BLOCK_P * BLOCK_C
        p = tl.arange(0, TH * TW)  # the inner pixels, row by row
        gram = tl.zeros((D_PAD, D_PAD), dtype=tl.float32)
        q_sq = tl.zeros((D_PAD,), dtype=tl.float32)
        k_sq = tl.zeros((D_PAD,), dtype=tl.float32)
        for tile in range(part, tl.cdiv(H, TH) * tiles_w, split):
            r0 = tile // tiles_w * TH
            c0 = tile % tiles_w * TW
            normalize_halo(x_ptr + image, xhat_slot, r0, c0, H, W, cs, c_ok, eps, C, BIAS_FREE, TH, TW, BLOCK_P,
                           BLOCK_C)
            tl.debug_barrier()
            project_halo(xhat_slot, qk_slot, w_in_ptr, b_in_ptr, head * D, C + head * D, D, r0, c0, H, W, cs, c_ok,
                         3 * C, True, TH, TW, BLOCK_P, BLOCK_C, D_PAD)
            tl.debug_barrier()
            dq, dk = depthwise_inner(qk_slot, taps_ptr, dw_b_ptr, q_cols, k_cols, q_cols, TAP_ROW // 3 + q_cols, d_ok,
                                     p // TW, p % TW, TAP_ROW, True,
                                     HAS_DW_BIAS, TH, TW, D_PAD)
            tl.debug_barrier()  # the next tile rewrites the slot
            inner = (((r0 + p // TW) < H) & ((c0 + p % TW) < W))[:, None]
            q = tl.where(inner, dq, 0.0).to(dtype)  # rounded as the per-operation kernels store q and k
            k = tl.where(inner, dk, 0.0).to(dtype)
            gram = tl.dot(tl.trans(q), k, gram)
            qf = q.to(tl.float32)
            kf = k.to(tl.float32)
            q_sq += tl.sum(qf * qf, axis=0)
            k_sq += tl.sum(kf * kf, axis=0)
        # partials[b, h, part]: (D + 2, D) float32, q_h k_h^T then |q_i|^2 then |k_j|^2
        out = out_ptr + (bh * split + part).to(tl.int64) * ((D + 2) * D)
        tl.store(out + ds[:, None] * D + ds[None, :], gram, mask=d_ok[:, None] & d_ok[None, :])
        tl.store(out + D * D + ds, q_sq, mask=d_ok)
        tl.store(out + (D + 1) * D + ds, k_sq, mask=d_ok)

    @torch.library.custom_op("hidiff::mdta_gram_partials", mutates_args=())
    def _mdta_gram_op(x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
                      dw_bias: torch.Tensor | None, heads: int, eps: float, bias_free: bool) -> torch.Tensor:
        return launch_mdta_gram(mdta_gram_kernel, x, w_qkv_t, b_qkv, dw_taps, dw_bias, heads, eps, bias_free)

    @_mdta_gram_op.register_fake
    def _mdta_gram_shape(x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
                         dw_bias: torch.Tensor | None, heads: int, eps: float, bias_free: bool) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // heads
        split = gram_split(b, heads, h, w, sm_count(x.device))
        return torch.empty((b, heads, split, d + 2, d), device=x.device, dtype=torch.float32)

    @torch.library.triton_op("hidiff::mdta_gram_partials_packaged", mutates_args=())
    def _mdta_gram_packaged(x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
                            dw_bias: torch.Tensor | None, heads: int, eps: float, bias_free: bool) -> torch.Tensor:
        return launch_mdta_gram(torch.library.wrap_triton(mdta_gram_kernel), x, w_qkv_t, b_qkv, dw_taps, dw_bias,
                                heads, eps, bias_free)

    # ------------------------------------------------------------------------------------ pass 2

    @torch.library.custom_op("hidiff::mdta_apply", mutates_args=())
    def _mdta_apply_op(x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
                       dw_bias: torch.Tensor | None, mixing: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                       bias_free: bool) -> torch.Tensor:
        return launch_mdta_apply(halo_block_kernel, x, w_qkv_t, b_qkv, dw_taps, dw_bias, mixing, b_out, eps, bias_free)

    @_mdta_apply_op.register_fake
    def _mdta_apply_shape(x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
                          dw_bias: torch.Tensor | None, mixing: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                          bias_free: bool) -> torch.Tensor:
        return empty_channels_last(x)

    @torch.library.triton_op("hidiff::mdta_apply_packaged", mutates_args=())
    def _mdta_apply_packaged(x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
                             dw_bias: torch.Tensor | None, mixing: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                             bias_free: bool) -> torch.Tensor:
        return launch_mdta_apply(torch.library.wrap_triton(halo_block_kernel), x, w_qkv_t, b_qkv, dw_taps, dw_bias,
                                 mixing, b_out, eps, bias_free)


def launch_mdta_gram(kernel: Any, x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
                     dw_bias: torch.Tensor | None, heads: int, eps: float, bias_free: bool, **tile: int) -> torch.Tensor:
    """One launch of pass 1 (``kernel``: the autotuned :data:`mdta_gram_kernel`, wrapped or not, or
    its ``.fn`` with an explicit ``tile``): the partials (B, heads, SPLIT, d + 2, d) float32."""
    b, c, h, w = x.shape
    d = c // heads
    block_c, d_pad = dot_block(c), dot_block(d)
    x = x.contiguous(memory_format=torch.channels_last)
    split = gram_split(b, heads, h, w, sm_count(x.device))
    partials = torch.empty((b, heads, split, d + 2, d), device=x.device, dtype=torch.float32)
    candidates = [tile] if tile else [dict(zip(("TH", "TW", "BLOCK_P"), t[:3], strict=True)) for t in GRAM_TILES
                                      if gram_tile_fits(*t, block_c, d_pad)]  # a superset
    if not candidates:
        raise ValueError(f"mdta_gram: no tile holds {c} channels")
    slot = max(gram_slot_size(t["TH"], t["TW"], t["BLOCK_P"], block_c, d_pad) for t in candidates)
    scratch = torch.empty(b * heads * split * slot, device=x.device, dtype=x.dtype)
    kernel[(b * heads, split)](x, w_qkv_t.contiguous(), b_qkv.contiguous(), dw_taps.contiguous(),
                               dw_bias if dw_bias is not None else b_qkv, partials, scratch, h, w, eps, slot,
                               C=c, TAP_ROW=dw_taps.shape[1], HEADS=heads, D=d, D_PAD=d_pad, BLOCK_C=block_c,
                               BIAS_FREE=bias_free,
                               HAS_DW_BIAS=dw_bias is not None, **tile)
    return partials


def launch_mdta_apply(kernel: Any, x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
                      dw_bias: torch.Tensor | None, mixing: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                      bias_free: bool, **tile: int) -> torch.Tensor:
    """One launch of pass 2 (``kernel``: the autotuned halo_block_kernel, or its ``.fn`` with an
    explicit ``tile``): x + M v + b_out, M = ``mixing`` (B, C, C)."""
    c = x.shape[1]
    return launch_halo_block(kernel, x, w_qkv_t, b_qkv, dw_taps, dw_bias, mixing.transpose(1, 2), b_out, eps,
                             bias_free, hidden=c, in_offset=2 * c, gate=False, **tile)


def _check_shapes(x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor) -> int:
    c = x.shape[1] if x.dim() == 4 else -1
    if c < 0 or tuple(w_qkv_t.shape) != (c, 3 * c) or tuple(b_qkv.shape) != (3 * c,) \
            or tuple(dw_taps.shape) != (9, 3 * tap_group(c)):
        raise ValueError(f"mdta_block expects x (B, C, H, W), w_qkv_t (C, 3C), b_qkv (3C,) and dw_taps "
                         f"(9, 3 tap_group(C)), got {tuple(x.shape)}, {tuple(w_qkv_t.shape)}, {tuple(b_qkv.shape)} and "
                         f"{tuple(dw_taps.shape)}")
    return c


def mdta_cosine(x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
                dw_bias: torch.Tensor | None, heads: int, eps: float, bias_free: bool = False) -> torch.Tensor:
    """Pass 1: cos(q_h, k_h) per head, (B, heads, d, d) float32, of q, k = dw3x3(W_qkv LN(x) + b_qkv)
    for x (B, C, H, W), w_qkv_t (C, 3C) with LN's affine folded in, b_qkv (3C,), dw_taps
    (9, 3 tap_group(C)) the depthwise filters in the kernels' layout (``halo_tiles.depthwise_taps``, 3 groups),
    dw_bias (3C,) or None. One Triton kernel and :mod:`engines.kernels.head_gram`'s
    epilogue on float16/bfloat16 CUDA tensors whose widths a tile of :data:`GRAM_TILES` holds (heads
    up to 64 channels), the PyTorch reference elsewhere."""
    c = _check_shapes(x, w_qkv_t, b_qkv, dw_taps)
    if heads < 1 or c % heads:
        raise ValueError(f"mdta_block: {heads} heads do not divide {c} channels")
    if not kernel_runs(x, w_qkv_t) or not any(gram_tile_fits(*t, dot_block(c), dot_block(c // heads)) for t in GRAM_TILES):
        return mdta_cosine_reference(x, w_qkv_t, b_qkv, dw_taps, dw_bias, heads, eps, bias_free)
    return head_gram_partials_to_cosine(
        kernel_op("mdta_gram_partials")(x, w_qkv_t, b_qkv, dw_taps, dw_bias, int(heads), float(eps), bool(bias_free)))


def mdta_apply(x: torch.Tensor, w_qkv_t: torch.Tensor, b_qkv: torch.Tensor, dw_taps: torch.Tensor,
               dw_bias: torch.Tensor | None, mixing: torch.Tensor, b_out: torch.Tensor | None, eps: float,
               bias_free: bool = False) -> torch.Tensor:
    """Pass 2: x + M v + b_out, v the last C channels of dw3x3(W_qkv LN(x) + b_qkv) (arguments as
    :func:`mdta_cosine`'s), M = ``mixing`` (B, C, C) in x's dtype, b_out (C,) or None. One Triton
    kernel on float16/bfloat16 CUDA tensors up to 512 channels, the PyTorch reference elsewhere;
    (B, C, H, W) in x's dtype, channels-last on CUDA."""
    c = _check_shapes(x, w_qkv_t, b_qkv, dw_taps)
    if tuple(mixing.shape) != (x.shape[0], c, c):
        raise ValueError(f"mdta_block expects the mixing matrices (B, C, C) = {(x.shape[0], c, c)}, got "
                         f"{tuple(mixing.shape)}")
    if not kernel_runs(x, w_qkv_t, mixing) or not width_fits(c):
        return mdta_apply_reference(x, w_qkv_t, b_qkv, dw_taps, dw_bias, mixing, b_out, eps, bias_free)
    return kernel_op("mdta_apply")(x, w_qkv_t, b_qkv, dw_taps, dw_bias, mixing, b_out, float(eps), bool(bias_free))
