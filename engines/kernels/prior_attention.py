"""HIM, the Restormer's cross-attention to the prior tokens, as one Triton kernel per call.

HIM (hidiff.restormer.HIM, paper Sec. 3.3, Eq. 3-4) runs at every pixel of a level's input x

    q = W_q LN1(x) + b_q                                        (C channels)
    out_h = softmax(scale q_h k_h^T) v_h      for each head h   (k, v: T prior tokens, from z)
    x' = x + W_p out + b_p

Unfused, that is five passes over the feature map (the norm, the q product, the attention, the
output product and the residual addition), each writing what the next reads back. But
everything that involves the prior is tiny and the same for every pixel of an image, so it folds
into two small per-image matrices:

    scores_{h,t} = LN1(x) . A[:, (h,t)] + a[(h,t)]
                   A[i, (h,t)] = scale gamma_i sum_{c in h} W_q[c, i] k_t[c],
                   a[(h,t)]    = scale sum_{c in h} (W_q beta + b_q)[c] k_t[c]
    x' = x + sum_{h,t} softmax_t(scores_h)_t B[(h,t), :] + b_p,
                   B[(h,t), o] = sum_{c in h} v_t[c] W_p[o, c]

(gamma, beta: LN1's affine; x_hat the normalised x without it). Per pixel that is LayerNorm, a
(C x H*T) product, a softmax within each head's T columns and a (H*T x C) product: one kernel that
reads x once and writes x' once. :func:`fold_prior_attention` makes A, a and B from the prior (a
few small products per call); :func:`prior_attention` runs the kernel on float16/bfloat16 CUDA
tensors and :func:`prior_attention_reference` elsewhere. ``fuse_restormer(prior_attention=True)``
runs every HIM this way.

The kernel's columns are heads x tokens, each padded to a power of two (and to at least 16
columns, tl.dot's smallest side): padding tokens of a real head score -inf (weight 0), padding
heads score 0 against zero rows of B (they add nothing). Statistics and the softmax in float32,
products on the tensor cores in x's dtype with float32 accumulation, as the fp16 model's own
float16 q and attention.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engines.kernels.support import (
    FALLBACK_CAPABILITY,
    autotune,
    dot_block,
    empty_channels_last,
    kernel_op,
    kernel_runs,
    launch_capability,
    power_of_2,
    tile_configs,
    tl,
    triton,
)

if triton is not None:
    from engines.kernels.layer_norm import load_rows, normalize

# (BLOCK_M, warps, stages) the autotuner tries: a program holds BLOCK_M whole rows of x (up to
# 256 channels) in registers through both products. Those with more than ROW_ELEMENTS_PER_THREAD
# elements of x a thread (fewer before Hopper, whose products hold more registers) are left out
# at a launch: they spill registers (a CPU test compiles the kept tiles for sm_90, sm_80 and sm_87).
TILES = ((128, 4, 1), (64, 4, 1), (32, 4, 1), (128, 8, 1), (64, 8, 1), (32, 8, 1))
ROW_ELEMENTS_PER_THREAD = {"hopper": 64, "before hopper": 48}


def fits_registers(block_m: int, block_c: int, warps: int, capability: int = FALLBACK_CAPABILITY) -> bool:
    """Whether BLOCK_M rows of BLOCK_C channels fit ``warps`` warps' registers on a card of
    ``capability`` (see :data:`TILES`)."""
    per_thread = ROW_ELEMENTS_PER_THREAD["hopper" if capability >= 90 else "before hopper"]
    return block_m * block_c <= per_thread * 32 * warps


def _fits_launch(config: Any, arguments: dict[str, Any]) -> bool:
    return fits_registers(config.kwargs["BLOCK_M"], arguments["BLOCK_C"], config.num_warps,
                          launch_capability(arguments))


def padded_columns(heads: int, tokens: int) -> tuple[int, int]:
    """(heads, tokens) of the kernel's score columns: each a power of two, at least 16 columns."""
    t = power_of_2(tokens)
    return max(power_of_2(heads), -(-16 // t)), t


def fold_prior_attention(k: torch.Tensor, v: torch.Tensor, heads: int, scale: float, wq_gamma: torch.Tensor,
                         q0: torch.Tensor, w_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-image matrices of the module docstring, in float32.

    k, v: (B, T, C) the prior's keys and values; ``wq_gamma`` (C, C) = W_q diag(gamma); ``q0`` (C,)
    = W_q beta + b_q; ``w_p`` (C, C) the output projection. Returns A (B, C, G*T'), a (B, G*T') and
    B (B, G*T', C) with (G, T') = :func:`padded_columns`: column h*T' + t is head h, token t."""
    b, tokens, c = k.shape
    g_pad, t_pad = padded_columns(heads, tokens)
    eye = torch.eye(heads, device=k.device, dtype=torch.float32)

    def per_head(tokens_: torch.Tensor) -> torch.Tensor:
        # (B, T, C) -> (B, C, G', T'): channel c of head h holds token t in column (h, t), zeros elsewhere
        split = tokens_.float().reshape(b, tokens, heads, c // heads)
        blocks = torch.einsum("btge,gh->bgeht", split, eye).reshape(b, c, heads, tokens)
        return F.pad(blocks, (0, t_pad - tokens, 0, g_pad - heads)).reshape(b, c, g_pad * t_pad)

    k_blocks, v_blocks = per_head(k), per_head(v)
    # Products written as broadcast sums, not einsums: compiled, each is one small fused kernel. As
    # einsums they became cuBLAS float32 GEMMs split hundreds of ways for a few hundred thousand
    # products, slower than the fused kernels.
    a_matrix = scale * (wq_gamma.float()[None, :, :, None] * k_blocks[:, :, None, :]).sum(1)  # (B, C, J)
    a_offset = scale * (q0.float()[None, :, None] * k_blocks).sum(1)  # (B, J)
    # padding tokens of a real head weigh nothing; padding heads (zero rows of B) score 0
    padding = torch.zeros(g_pad, t_pad, device=k.device, dtype=torch.float32)
    padding[:heads, tokens:] = float("-inf")
    b_matrix = (w_p.float()[None, None, :, :] * v_blocks.transpose(1, 2)[:, :, None, :]).sum(-1)  # (B, J, C)
    return a_matrix, a_offset + padding.flatten(), b_matrix


def prior_attention_reference(x: torch.Tensor, a_matrix: torch.Tensor, a_offset: torch.Tensor,
                              b_matrix: torch.Tensor, bias: torch.Tensor | None, tokens: int, eps: float,
                              bias_free: bool) -> torch.Tensor:
    """x + softmax(LN(x) A + a) B + b, the softmax within each group of ``tokens`` columns
    (padded to a power of two), for x (B, C, H, W): in x's dtype, float32 inside."""
    b, c, h, w = x.shape
    rows = x.float().permute(0, 2, 3, 1).reshape(b, h * w, c)
    var = rows.var(-1, keepdim=True, unbiased=False)
    centred = rows if bias_free else rows - rows.mean(-1, keepdim=True)
    scores = (centred * torch.rsqrt(var + eps)) @ a_matrix.float() + a_offset.float()[:, None, :]
    t_pad = power_of_2(tokens)
    weights = scores.unflatten(-1, (-1, t_pad)).softmax(-1).flatten(-2)
    out = rows + weights @ b_matrix.float()
    if bias is not None:
        out = out + bias.float()
    return out.reshape(b, h, w, c).permute(0, 3, 1, 2).to(x.dtype)


if triton is not None:

    @autotune(tile_configs(("BLOCK_M", "num_warps", "num_stages"), TILES), key=["HW", "C", "GROUPS", "TOKENS"],
              fits=_fits_launch)
    @triton.jit
    def prior_attention_kernel(
        x_ptr, a_ptr, a0_ptr, bm_ptr, bias_ptr, y_ptr,
        HW, C, eps,
        BIAS_FREE: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, GROUPS: tl.constexpr,
        TOKENS: tl.constexpr, BLOCK_M: tl.constexpr,
    ):
        # Program: pixels [m0, m0 + BLOCK_M) of image b (channels-last rows of C), all channels.
        image = tl.program_id(1).to(tl.int64)
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cs = tl.arange(0, BLOCK_C)
        js = tl.arange(0, GROUPS * TOKENS)
        row_ok = rows < HW
        c_ok = cs < C
        x_image = x_ptr + image * HW * C
        x = load_rows(x_image, rows, row_ok, cs, c_ok, C)
        x_hat = normalize(x, c_ok, C, eps, BIAS_FREE).to(x_ptr.dtype.element_ty)
        # scores (BLOCK_M, heads x tokens) = LN(x) A + a, float32
        a = tl.load(a_ptr + image * C * GROUPS * TOKENS + cs[:, None] * (GROUPS * TOKENS) + js[None, :],
                    mask=c_ok[:, None], other=0.0)
        scores = tl.dot(x_hat, a) + tl.load(a0_ptr + image * GROUPS * TOKENS + js)[None, :]
        # softmax over each head's tokens
        grouped = tl.reshape(scores, (BLOCK_M, GROUPS, TOKENS))
        weights = tl.exp(grouped - tl.max(grouped, axis=2)[:, :, None])
        weights = weights / tl.sum(weights, axis=2)[:, :, None]
        weights = tl.reshape(weights, (BLOCK_M, GROUPS * TOKENS)).to(x_ptr.dtype.element_ty)
        # x' = x + weights B + b
        bm = tl.load(bm_ptr + image * GROUPS * TOKENS * C + js[:, None] * C + cs[None, :], mask=c_ok[None, :], other=0.0)
        out = x + tl.dot(weights, bm)
        if HAS_BIAS:
            out += tl.load(bias_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + image * HW * C + rows.to(tl.int64)[:, None] * C + cs[None, :],
                 out.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & c_ok[None, :])

    # Opaque for torch.compile, as engines.kernels.norm_matmul's ops.
    @torch.library.custom_op("hidiff::prior_attention", mutates_args=())
    def _prior_attention_op(x: torch.Tensor, a_matrix: torch.Tensor, a_offset: torch.Tensor, b_matrix: torch.Tensor,
                            bias: torch.Tensor | None, tokens: int, eps: float, bias_free: bool) -> torch.Tensor:
        return launch_prior_attention(prior_attention_kernel, x, a_matrix, a_offset, b_matrix, bias, tokens, eps,
                                      bias_free)

    @_prior_attention_op.register_fake
    def _prior_attention_shape(x: torch.Tensor, a_matrix: torch.Tensor, a_offset: torch.Tensor,
                               b_matrix: torch.Tensor, bias: torch.Tensor | None, tokens: int, eps: float,
                               bias_free: bool) -> torch.Tensor:
        return empty_channels_last(x)

    @torch.library.triton_op("hidiff::prior_attention_packaged", mutates_args=())
    def _prior_attention_packaged(x: torch.Tensor, a_matrix: torch.Tensor, a_offset: torch.Tensor,
                                  b_matrix: torch.Tensor, bias: torch.Tensor | None, tokens: int, eps: float,
                                  bias_free: bool) -> torch.Tensor:
        return launch_prior_attention(torch.library.wrap_triton(prior_attention_kernel), x, a_matrix, a_offset,
                                      b_matrix, bias, tokens, eps, bias_free)


def launch_prior_attention(kernel: Any, x: torch.Tensor, a_matrix: torch.Tensor, a_offset: torch.Tensor,
                           b_matrix: torch.Tensor, bias: torch.Tensor | None, tokens: int, eps: float,
                           bias_free: bool, **tile: int) -> torch.Tensor:
    """One launch of ``kernel`` (the autotuned kernel, or its ``.fn`` with an explicit ``tile``);
    A and B in x's dtype, a in float32, all contiguous."""
    b, c, h, w = x.shape
    columns = a_matrix.shape[-1]
    t_pad = power_of_2(tokens)
    x = x.contiguous(memory_format=torch.channels_last)
    out = empty_channels_last(x)
    a_matrix = a_matrix.to(x.dtype).contiguous()
    b_matrix = b_matrix.to(x.dtype).contiguous()
    a_offset = a_offset.float().contiguous()

    def grid(meta: dict[str, int]) -> tuple[int, int]:
        return (triton.cdiv(h * w, meta["BLOCK_M"]), b)

    kernel[grid](x, a_matrix, a_offset, b_matrix, bias if bias is not None else x, out, h * w, c, eps,
                 BIAS_FREE=bias_free, HAS_BIAS=bias is not None, BLOCK_C=dot_block(c),
                 GROUPS=columns // t_pad, TOKENS=t_pad, **tile)
    return out


def prior_attention(x: torch.Tensor, a_matrix: torch.Tensor, a_offset: torch.Tensor, b_matrix: torch.Tensor,
                    bias: torch.Tensor | None, tokens: int, eps: float, bias_free: bool = False) -> torch.Tensor:
    """x + softmax(LN(x) A + a) B + b (the module docstring) for x (B, C, H, W), with the per-image
    A (B, C, J), a (B, J), B (B, J, C) of :func:`fold_prior_attention`. Returns (B, C, H, W) in x's
    dtype, channels-last on CUDA: one Triton kernel for float16/bfloat16 CUDA tensors, the PyTorch
    reference elsewhere."""
    b, c = x.shape[:2]
    j = a_matrix.shape[-1]
    if x.dim() != 4 or tuple(a_matrix.shape) != (b, c, j) or tuple(a_offset.shape) != (b, j) \
            or tuple(b_matrix.shape) != (b, j, c) or j % power_of_2(tokens):
        raise ValueError(f"prior_attention expects x (B, C, H, W), A (B, C, J), a (B, J) and B (B, J, C) with J a "
                         f"multiple of the padded token count, got {tuple(x.shape)}, {tuple(a_matrix.shape)}, "
                         f"{tuple(a_offset.shape)}, {tuple(b_matrix.shape)} and {tokens} tokens")
    if not kernel_runs(x):
        return prior_attention_reference(x, a_matrix, a_offset, b_matrix, bias, tokens, eps, bias_free)
    return kernel_op("prior_attention")(x, a_matrix, a_offset, b_matrix, bias, tokens, float(eps), bool(bias_free))
