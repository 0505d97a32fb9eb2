"""The feed-forward half of a Transformer block as one Triton kernel, its hidden tensor never in memory.

A block's GDFN (hidiff.restormer.GDFN, with the block's LayerNorm and residual) runs, at every pixel,

    h = W_in LN(x) + b_in                      (2 * HIDDEN channels)
    g = gelu(dw3x3(h)[:HIDDEN]) * dw3x3(h)[HIDDEN:]
    x = x + W_out g + b_out

Per-operation kernels write h (2 * HIDDEN = 5.3 C channels) and g to memory and read them back:
most of a frame's traffic. :func:`gdfn_block` reads x once and writes the result once.

The kernel is :data:`engines.kernels.halo_tiles.halo_block_kernel` with the gate: one program
owns a tile of pixels with its one-pixel halo and walks the hidden channels in chunks, each with
its gate partners (channels j and j + HIDDEN), in a scratch slot of its own that stays in the
caches; the chunk's share of W_out g goes to a float32 accumulator in registers. The LayerNorm's
affine is folded into W_in and b_in beforehand (``engines.kernels.fuse.NormProjection``).

The op is a ``torch.library.custom_op`` that ``torch.compile`` calls as one opaque operation,
and a ``triton_op`` (``hidiff::gdfn_block_packaged``) that AOTInductor compiles into packages.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engines.kernels.halo_tiles import depthwise_weight, launch_halo_block, tap_group, width_fits
from engines.kernels.support import empty_channels_last, kernel_op, kernel_runs, triton

if triton is not None:
    from engines.kernels.halo_tiles import halo_block_kernel


def gdfn_block_reference(x: torch.Tensor, w_in_t: torch.Tensor, b_in: torch.Tensor, dw_taps: torch.Tensor,
                         dw_bias: torch.Tensor | None, w_out_t: torch.Tensor, b_out: torch.Tensor | None,
                         eps: float, bias_free: bool) -> torch.Tensor:
    """x + W_out gate(dw3x3(W_in LN(x) + b_in)) + b_out in PyTorch, float32 inside: x (B, C, H, W),
    w_in_t (C, 2 * HIDDEN) with LN's affine folded in, b_in (2 * HIDDEN,), dw_taps the depthwise
    filters in the kernel's layout (``halo_tiles.depthwise_taps``, 2 groups), dw_bias (2 * HIDDEN,) or None,
    w_out_t (HIDDEN, C), b_out (C,) or None."""
    xf = x.float().permute(0, 2, 3, 1)
    var = xf.var(-1, keepdim=True, unbiased=False)
    centred = xf if bias_free else xf - xf.mean(-1, keepdim=True)
    hidden = ((centred * torch.rsqrt(var + eps)) @ w_in_t.float() + b_in.float()).permute(0, 3, 1, 2)
    z = F.conv2d(hidden, depthwise_weight(dw_taps, hidden.shape[1], 2).float(),
                 None if dw_bias is None else dw_bias.float(), padding=1,
                 groups=hidden.shape[1])
    z1, z2 = z.chunk(2, dim=1)
    y = (F.gelu(z1) * z2).permute(0, 2, 3, 1) @ w_out_t.float()
    if b_out is not None:
        y = y + b_out.float()
    return (xf + y).permute(0, 3, 1, 2).to(x.dtype)


if triton is not None:

    @torch.library.custom_op("hidiff::gdfn_block", mutates_args=())
    def _gdfn_block_op(x: torch.Tensor, w_in_t: torch.Tensor, b_in: torch.Tensor, dw_taps: torch.Tensor,
                       dw_bias: torch.Tensor | None, w_out_t: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                       bias_free: bool) -> torch.Tensor:
        return launch_gdfn_block(halo_block_kernel, x, w_in_t, b_in, dw_taps, dw_bias, w_out_t, b_out, eps, bias_free)

    @_gdfn_block_op.register_fake
    def _gdfn_block_shape(x: torch.Tensor, w_in_t: torch.Tensor, b_in: torch.Tensor, dw_taps: torch.Tensor,
                          dw_bias: torch.Tensor | None, w_out_t: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                          bias_free: bool) -> torch.Tensor:
        return empty_channels_last(x)

    @torch.library.triton_op("hidiff::gdfn_block_packaged", mutates_args=())
    def _gdfn_block_packaged(x: torch.Tensor, w_in_t: torch.Tensor, b_in: torch.Tensor, dw_taps: torch.Tensor,
                             dw_bias: torch.Tensor | None, w_out_t: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                             bias_free: bool) -> torch.Tensor:
        return launch_gdfn_block(torch.library.wrap_triton(halo_block_kernel), x, w_in_t, b_in, dw_taps, dw_bias,
                                 w_out_t, b_out, eps, bias_free)


def launch_gdfn_block(kernel: Any, x: torch.Tensor, w_in_t: torch.Tensor, b_in: torch.Tensor, dw_taps: torch.Tensor,
                      dw_bias: torch.Tensor | None, w_out_t: torch.Tensor, b_out: torch.Tensor | None, eps: float,
                      bias_free: bool, **tile: int) -> torch.Tensor:
    """One launch of ``kernel`` (the autotuned halo_block_kernel, or its ``.fn`` with an explicit
    ``tile``) with the gate: x is read channels-last (copied first if it is not), the result is
    written channels-last."""
    return launch_halo_block(kernel, x, w_in_t, b_in, dw_taps, dw_bias, w_out_t, b_out, eps, bias_free,
                             hidden=w_out_t.shape[0], in_offset=0, gate=True, **tile)


def gdfn_block(x: torch.Tensor, w_in_t: torch.Tensor, b_in: torch.Tensor, dw_taps: torch.Tensor,
               dw_bias: torch.Tensor | None, w_out_t: torch.Tensor, b_out: torch.Tensor | None, eps: float,
               bias_free: bool = False) -> torch.Tensor:
    """x + W_out gate(dw3x3(W_in LN(x) + b_in)) + b_out for x (B, C, H, W): w_in_t (C, 2 * HIDDEN)
    and b_in (2 * HIDDEN,) with LN's affine folded in, dw_taps (9, 2 tap_group(HIDDEN)) the
    depthwise filters in the kernel's layout (``halo_tiles.depthwise_taps``, 2 groups), dw_bias
    (2 * HIDDEN,) or None, w_out_t (HIDDEN, C), b_out (C,) or None.

    One Triton kernel on float16/bfloat16 CUDA tensors up to 512 channels (channels-last x is read in
    place), the PyTorch reference elsewhere. Returns (B, C, H, W) in x's dtype, channels-last on CUDA."""
    c = x.shape[1] if x.dim() == 4 else -1
    hidden = w_out_t.shape[0] if w_out_t.dim() == 2 else -1
    if (c < 0 or hidden < 0 or tuple(w_in_t.shape) != (c, 2 * hidden) or tuple(b_in.shape) != (2 * hidden,)
            or tuple(dw_taps.shape) != (9, 2 * tap_group(hidden)) or tuple(w_out_t.shape) != (hidden, c)):
        raise ValueError(f"gdfn_block expects x (B, C, H, W), w_in_t (C, 2H), b_in (2H,), dw_taps (9, 2 tap_group(H)) "
                         f"and w_out_t (H, C), got {tuple(x.shape)}, {tuple(w_in_t.shape)}, {tuple(b_in.shape)}, "
                         f"{tuple(dw_taps.shape)} and {tuple(w_out_t.shape)}")
    if not kernel_runs(x, w_in_t, w_out_t) or not width_fits(c):
        return gdfn_block_reference(x, w_in_t, b_in, dw_taps, dw_bias, w_out_t, b_out, eps, bias_free)
    return kernel_op("gdfn_block")(x, w_in_t, b_in, dw_taps, dw_bias, w_out_t, b_out, float(eps), bool(bias_free))
