"""The Restormer's LayerNorms and residual additions inside its 1x1 projections: two Triton
kernels.

A Transformer block (hidiff.restormer.TransformerBlock) runs, at every pixel,

    x = x + MDTA(LN1(x)):   qkv = W_qkv LN1(x), depthwise convolution, attention,
                            x = x + M v + b_out            (M = W_out blockdiag(attn), per image)
    x = x + GDFN(LN2(x)):   h = W_in LN2(x), depthwise convolution and gate,
                            x = x + W_out gate

In channels-last memory a pixel's C channels are contiguous, so a feature map is an (M, C)
matrix (M = B*H*W) and every 1x1 projection a matrix product. Unfused, each LayerNorm writes
LN(x) only for the projection to read it back, and each residual addition reads the
projection's output back. Here they happen inside the products:

- :func:`norm_conv1x1`: y = LN(x) W^T + b. A program loads BLOCK_M whole rows (all C channels),
  computes their moments in float32, normalises, and multiplies by W^T one BLOCK_N slice at a
  time. The LayerNorm's affine parameters are folded into W and b beforehand
  (W diag(gamma), W beta + b; ``engines.kernels.fuse.NormProjection``).
- :func:`conv1x1_residual`: y = a W^T + b + r, the residual addition as the product's epilogue.
  W may differ per image, for MDTA's folded attention-and-projection matrix M.

On Hopper GPUs the norm kernel moves W^T's slices and the output tiles through the tensor memory
accelerator (:data:`norm_matmul_tma_kernel`, where the rows of W^T and of the output are a
multiple of 16 bytes: :func:`tma_fits`), which takes W's reload for every row tile and the
output's change of layout off the SM's load/store path. Products in float16 on the tensor cores,
accumulated in float32; LayerNorm statistics in float32 (as hidiff.restormer's LayerNorm).
``fuse_restormer(norms=True)`` runs every block without the prior's modulation this way. The
kernels are ``torch.library.custom_op``s: ``torch.compile`` calls them as opaque operations,
without graph breaks.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from engines.kernels.support import (
    FALLBACK_CAPABILITY,
    TensorDescriptor,
    autotune,
    dot_block,
    empty_channels_last,
    kernel_op,
    kernel_runs,
    launch_capability,
    tile_configs,
    tl,
    tma_available,
    triton,
)

if triton is not None:
    from engines.kernels.layer_norm import load_rows, normalize

# ------------------------------------------------------------------------------------ references


def norm_conv1x1_reference(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, eps: float,
                           bias_free: bool) -> torch.Tensor:
    """LN(x) W^T + b over the channels of x (B, K, H, W), with LN's affine already folded into
    ``weight_t`` (K, N) and ``bias`` (N,): (B, N, H, W) in x's dtype, float32 inside."""
    xf = x.float().permute(0, 2, 3, 1)
    var = xf.var(-1, keepdim=True, unbiased=False)
    centred = xf if bias_free else xf - xf.mean(-1, keepdim=True)
    y = (centred * torch.rsqrt(var + eps)) @ weight_t.float() + bias.float()
    return y.permute(0, 3, 1, 2).to(x.dtype)


def conv1x1_residual_reference(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                               residual: torch.Tensor) -> torch.Tensor:
    """residual + W a + b: a (B, K, H, W) or (B, K, H*W), weight (N, K) or per image (B, N, K),
    residual (B, N, H, W). Float32 inside, residual's dtype out."""
    flat = a.reshape(a.shape[0], a.shape[1], -1).float()
    w = weight.float()
    y = torch.einsum("nk,bkm->bnm", w, flat) if w.dim() == 2 else torch.bmm(w, flat)
    if bias is not None:
        y = y + bias.float()[:, None]
    return (residual.float() + y.reshape(residual.shape)).to(residual.dtype)


# ------------------------------------------------------------------------------------ kernels

# Tiles the autotuners try, (BLOCK_M, BLOCK_N or BLOCK_K, warps, stages). The products are skinny
# (K = C is 48 to 192 channels, N up to a thousand), so both kernels are bound by memory: a
# program keeps its rows in registers and walks the outputs (norm) or the inputs (residual) in
# slices. None spills registers on sm_90 at the widest rows the GoPro Restormer gives them
# (BLOCK_K 256 for the norm, BLOCK_N 256 for the residual; a CPU test compiles them for sm_90,
# sm_80 and sm_87): (128, 64, 4) and (128, 32, 4) did, and are left out. Before Hopper a launch
# leaves out two more (norm_tile_fits, residual_tile_fits).
NORM_TILES = ((64, 64, 4, 1), (64, 128, 4, 1), (128, 32, 8, 3), (64, 64, 8, 3), (64, 32, 4, 3), (256, 64, 8, 2))
RESIDUAL_TILES = ((64, 64, 4, 3), (64, 64, 4, 2), (64, 32, 4, 3), (128, 64, 8, 3), (128, 32, 8, 3))


def norm_tile_fits(block_m: int, block_k: int, capability: int = FALLBACK_CAPABILITY) -> bool:
    """Whether a norm-kernel tile fits a card of ``capability``: before Hopper, 256 rows of 256
    channels need 192 KiB of shared memory, more than the 163 KiB a block gets there."""
    return capability >= 90 or block_m * block_k < 256 * 256


def residual_tile_fits(block_n: int, stages: int, capability: int = FALLBACK_CAPABILITY) -> bool:
    """Whether a residual-kernel tile fits a card of ``capability``: before Hopper, at BLOCK_N 256
    the 2-stage tile spills registers."""
    return capability >= 90 or block_n < 256 or stages >= 3


def _norm_fits_launch(config: Any, arguments: dict[str, Any]) -> bool:
    return norm_tile_fits(config.kwargs["BLOCK_M"], arguments["BLOCK_K"], launch_capability(arguments))


def _residual_fits_launch(config: Any, arguments: dict[str, Any]) -> bool:
    return residual_tile_fits(arguments["BLOCK_N"], config.num_stages, launch_capability(arguments))

# The norm kernel on Hopper (TMA): 64 output columns a slice; the autotuner chooses (BLOCK_M,
# warps, stages). Every program reads W^T whole, so 128-row tiles halve its reloads. A pre-launch
# hook sets the output descriptor's block to the tile (Triton then keeps the choice in memory
# only: its disk cache refuses hooks). At BLOCK_K 256 (192 channels) 128-row tiles fit 8 warps
# and spill on 4.
TMA_BLOCK_N = 64
TMA_LAUNCHES = ((64, 4, 1), (64, 4, 2), (64, 4, 3), (64, 8, 2), (128, 8, 2), (128, 8, 3))


def _tma_output_block(nargs: dict[str, Any]) -> None:
    nargs["y_desc"].block_shape = [nargs["BLOCK_M"], nargs["BLOCK_N"]]


if triton is not None:

    @triton.jit
    def _normalized_rows(x_ptr, rows, row_ok, ks, k_ok, K, eps, stride_xm, BIAS_FREE: tl.constexpr):
        """LN(x) of the ``rows`` of x (M, K), all K channels, without the affine: the result in x's dtype."""
        x = load_rows(x_ptr, rows, row_ok, ks, k_ok, stride_xm)
        return normalize(x, k_ok, K, eps, BIAS_FREE).to(x_ptr.dtype.element_ty)

    @autotune(tile_configs(("BLOCK_M", "BLOCK_N", "num_warps", "num_stages"), NORM_TILES), key=["M", "N", "K"],
              fits=_norm_fits_launch)
    @triton.jit
    def norm_matmul_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr,
        M, N, K, eps,
        stride_xm, stride_ym,
        BIAS_FREE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        # Program: rows [m0, m0 + BLOCK_M) of x (M, K) with all K channels, every output column.
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        ks = tl.arange(0, BLOCK_K)
        row_ok = rows < M
        k_ok = ks < K
        a = _normalized_rows(x_ptr, rows, row_ok, ks, k_ok, K, eps, stride_xm, BIAS_FREE)
        out_rows = y_ptr + rows.to(tl.int64)[:, None] * stride_ym
        for n0 in range(0, N, BLOCK_N):
            ns = n0 + tl.arange(0, BLOCK_N)
            n_ok = ns < N
            w = tl.load(w_ptr + ks[:, None] * N + ns[None, :], mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(a, w)  # float32
            acc += tl.load(b_ptr + ns, mask=n_ok, other=0.0).to(tl.float32)[None, :]
            tl.store(out_rows + ns[None, :], acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])

    @autotune(tile_configs(("BLOCK_M", "num_warps", "num_stages"), TMA_LAUNCHES, pre_hook=_tma_output_block),
              key=["M", "N", "K"], disk_cache=False)
    @triton.jit
    def norm_matmul_tma_kernel(
        x_ptr, w_desc, b_ptr, y_desc,
        M, N, K, eps,
        stride_xm,
        BIAS_FREE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        # norm_matmul_kernel's program, with W^T's slices and the output's tiles moved by the
        # tensor memory accelerator (Hopper): W^T straight into shared memory for the product
        # (rows past K and columns past N filled with zeros), the output from shared memory to
        # global (rows past M and columns past N left out). The SM's load/store path, which the
        # plain kernel saturated with W's reloads and the output's layout change, carries only x.
        m0 = tl.program_id(0) * BLOCK_M
        rows = m0 + tl.arange(0, BLOCK_M)
        ks = tl.arange(0, BLOCK_K)
        a = _normalized_rows(x_ptr, rows, rows < M, ks, ks < K, K, eps, stride_xm, BIAS_FREE)
        for n0 in range(0, N, BLOCK_N):
            acc = tl.dot(a, w_desc.load([0, n0]))  # float32
            ns = n0 + tl.arange(0, BLOCK_N)
            acc += tl.load(b_ptr + ns, mask=ns < N, other=0.0).to(tl.float32)[None, :]
            y_desc.store([m0, n0], acc.to(x_ptr.dtype.element_ty))

    @autotune(tile_configs(("BLOCK_M", "BLOCK_K", "num_warps", "num_stages"), RESIDUAL_TILES), key=["M", "N", "K"],
              fits=_residual_fits_launch)
    @triton.jit
    def matmul_residual_kernel(
        a_ptr, w_ptr, b_ptr, r_ptr, y_ptr,
        M, N, K,
        stride_ab, stride_am, stride_wb, stride_wk, stride_wn,
        stride_rb, stride_rm, stride_yb, stride_ym,
        HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        # Program: rows [m0, m0 + BLOCK_M) of image b, output columns [n0, n0 + BLOCK_N); the
        # input channels in slices of BLOCK_K.
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        ns = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        batch = tl.program_id(2).to(tl.int64)
        row_ok = rows < M
        n_ok = ns < N
        a_rows = a_ptr + batch * stride_ab + rows.to(tl.int64)[:, None] * stride_am
        w_cols = w_ptr + batch * stride_wb + ns[None, :] * stride_wn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < K
            a = tl.load(a_rows + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_cols + ks[:, None] * stride_wk, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(a, w, acc)
        if HAS_BIAS:
            acc += tl.load(b_ptr + ns, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        mask = row_ok[:, None] & n_ok[None, :]
        offsets = rows.to(tl.int64)[:, None]
        acc += tl.load(r_ptr + batch * stride_rb + offsets * stride_rm + ns[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + batch * stride_yb + offsets * stride_ym + ns[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=mask)

    # Opaque ops for torch.compile (custom_op; the triton_op forms are the packages': see
    # engines.kernels.support.PACKAGED_SUFFIX).
    @torch.library.custom_op("hidiff::norm_conv1x1", mutates_args=())
    def _norm_conv1x1_op(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, eps: float,
                         bias_free: bool) -> torch.Tensor:
        if tma_fits(x, weight_t):
            return launch_norm_matmul_tma(norm_matmul_tma_kernel, x, weight_t, bias, eps, bias_free)
        return launch_norm_matmul(norm_matmul_kernel, x, weight_t, bias, eps, bias_free)

    @_norm_conv1x1_op.register_fake
    def _norm_conv1x1_shape(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, eps: float,
                            bias_free: bool) -> torch.Tensor:
        b, _, h, w = x.shape
        return empty_channels_last(x, weight_t.shape[1])

    @torch.library.custom_op("hidiff::conv1x1_residual", mutates_args=())
    def _conv1x1_residual_op(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             residual: torch.Tensor) -> torch.Tensor:
        return launch_matmul_residual(matmul_residual_kernel, a, weight, bias, residual)

    @_conv1x1_residual_op.register_fake
    def _conv1x1_residual_shape(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                residual: torch.Tensor) -> torch.Tensor:
        return empty_channels_last(residual)

    # The packaged forms (engines.kernels.support.PACKAGED_SUFFIX). The norm kernel's packaged form is
    # the pointer one on every card: torch.export's trace of a wrap_triton launch does not record
    # host-side TMA descriptors (TensorDescriptor arguments; torch 2.11 to 2.13), so AOTInductor
    # cannot compile the TMA form in (its build stops in the kernel's mutation analysis).
    @torch.library.triton_op("hidiff::norm_conv1x1_packaged", mutates_args=())
    def _norm_conv1x1_packaged(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, eps: float,
                               bias_free: bool) -> torch.Tensor:
        return launch_norm_matmul(torch.library.wrap_triton(norm_matmul_kernel), x, weight_t, bias, eps, bias_free)

    @torch.library.triton_op("hidiff::conv1x1_residual_packaged", mutates_args=())
    def _conv1x1_residual_packaged(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                   residual: torch.Tensor) -> torch.Tensor:
        return launch_matmul_residual(torch.library.wrap_triton(matmul_residual_kernel), a, weight, bias, residual)


def launch_norm_matmul(kernel: Any, x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, eps: float,
                       bias_free: bool, **tile: int) -> torch.Tensor:
    """One launch of ``kernel`` (the autotuned kernel, or its ``.fn`` with an explicit ``tile``)."""
    b, k, h, w = x.shape
    n = weight_t.shape[1]
    x = x.contiguous(memory_format=torch.channels_last)
    out = empty_channels_last(x, n)
    m = b * h * w

    def grid(meta: dict[str, int]) -> tuple[int]:
        return (triton.cdiv(m, meta["BLOCK_M"]),)

    kernel[grid](x, weight_t, bias, out, m, n, k, eps, k, n, BIAS_FREE=bias_free, BLOCK_K=dot_block(k), **tile)
    return out


def tma_fits(x: torch.Tensor, weight_t: torch.Tensor) -> bool:
    """Whether the norm kernel's TMA form serves this launch: the tensor memory accelerator is
    available (:func:`~engines.kernels.support.tma_available`) and the rows of W^T and of the
    output (N channels) are a multiple of 16 bytes."""
    return tma_available(x.device) and weight_t.shape[1] * x.element_size() % 16 == 0


def launch_norm_matmul_tma(kernel: Any, x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, eps: float,
                           bias_free: bool, **launch: int) -> torch.Tensor:
    """One launch of a TMA kernel: the autotuned one (its hook sets the output descriptor's block to
    the tile), or its ``.fn`` with an explicit ``BLOCK_M`` and optionally ``num_warps`` /
    ``num_stages``. W^T and the output are descriptors of BLOCK_K x TMA_BLOCK_N and BLOCK_M x
    TMA_BLOCK_N tiles made by ``TensorDescriptor.from_tensor``; the output is written as an (M, N)
    matrix and returned as its channels-last view."""
    b, k, h, w = x.shape
    n = weight_t.shape[1]
    x = x.contiguous(memory_format=torch.channels_last)
    m = b * h * w
    out = torch.empty((m, n), device=x.device, dtype=x.dtype)
    block_k = dot_block(k)
    w_desc = TensorDescriptor.from_tensor(weight_t.contiguous(), [block_k, TMA_BLOCK_N])
    y_desc = TensorDescriptor.from_tensor(out, [launch.get("BLOCK_M", TMA_LAUNCHES[0][0]), TMA_BLOCK_N])

    def grid(meta: dict[str, int]) -> tuple[int]:
        return (triton.cdiv(m, meta["BLOCK_M"]),)

    kernel[grid](x, w_desc, bias, y_desc, m, n, k, eps, k, BIAS_FREE=bias_free, BLOCK_K=block_k, BLOCK_N=TMA_BLOCK_N,
                 **launch)
    return out.view(b, h, w, n).permute(0, 3, 1, 2)


def launch_matmul_residual(kernel: Any, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           residual: torch.Tensor, **tile: int) -> torch.Tensor:
    """One launch of ``kernel`` (the autotuned kernel, or its ``.fn`` with an explicit ``tile``)."""
    b, n, h, w = residual.shape
    k, m = a.shape[1], h * w
    residual = residual.contiguous(memory_format=torch.channels_last)
    flat = a.reshape(a.shape[0], k, -1)
    if flat.stride(1) != 1:  # the kernel reads channel-minor rows, as channels-last maps and MDTA's v are
        flat = flat.transpose(1, 2).contiguous().transpose(1, 2)
    out = empty_channels_last(residual)
    # W^T's element (k, n): shared weights (N, K), or one (N, K) matrix per image.
    stride_wb, stride_wn, stride_wk = (0, *weight.stride()) if weight.dim() == 2 else weight.stride()
    block_n = min(dot_block(n), 256)

    def grid(meta: dict[str, int]) -> tuple[int, int, int]:
        return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, block_n), b)

    kernel[grid](flat, weight, bias if bias is not None else residual, residual, out,
                 m, n, k,
                 flat.stride(0), flat.stride(2), stride_wb, stride_wk, stride_wn,
                 residual.stride(0), n, out.stride(0), n,
                 HAS_BIAS=bias is not None, BLOCK_N=block_n, **tile)
    return out


def norm_conv1x1(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, eps: float,
                 bias_free: bool = False) -> torch.Tensor:
    """LN(x) W^T + b over the channels of x (B, K, H, W), LN's affine folded into ``weight_t``
    (K, N) and ``bias`` (N,) (``engines.kernels.fuse.NormProjection`` folds them). Returns (B, N, H, W) in x's dtype,
    channels-last on CUDA: one Triton kernel for float16/bfloat16 CUDA tensors (channels-last x
    is read in place, other layouts are copied first), the PyTorch reference elsewhere."""
    if x.dim() != 4 or weight_t.dim() != 2 or weight_t.shape[0] != x.shape[1] or tuple(bias.shape) != (weight_t.shape[1],):
        raise ValueError(f"norm_conv1x1 expects x (B, K, H, W), weight_t (K, N) and bias (N,), got "
                         f"{tuple(x.shape)}, {tuple(weight_t.shape)} and {tuple(bias.shape)}")
    if not kernel_runs(x, weight_t):
        return norm_conv1x1_reference(x, weight_t, bias, eps, bias_free)
    return kernel_op("norm_conv1x1")(x, weight_t.contiguous(), bias.contiguous(), float(eps), bool(bias_free))


def conv1x1_residual(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     residual: torch.Tensor) -> torch.Tensor:
    """residual + W a + b: a (B, K, H, W) or (B, K, H*W), weight (N, K) shared or (B, N, K) per
    image, bias (N,) or None, residual (B, N, H, W). Returns (B, N, H, W) in residual's dtype,
    channels-last on CUDA: one Triton kernel for float16/bfloat16 CUDA tensors, the PyTorch
    reference elsewhere."""
    b, n = residual.shape[:2]
    k = a.shape[1]
    shared = weight.dim() == 2 and tuple(weight.shape) == (n, k)
    per_image = weight.dim() == 3 and tuple(weight.shape) == (b, n, k)
    if residual.dim() != 4 or a.shape[0] != b or math.prod(a.shape[2:]) != math.prod(residual.shape[2:]) or not (shared or per_image):
        raise ValueError(f"conv1x1_residual expects a (B, K, H, W), weight (N, K) or (B, N, K) and residual "
                         f"(B, N, H, W), got {tuple(a.shape)}, {tuple(weight.shape)} and {tuple(residual.shape)}")
    if not kernel_runs(a, weight, residual):
        return conv1x1_residual_reference(a, weight, bias, residual)
    return kernel_op("conv1x1_residual")(a, weight, bias, residual)
