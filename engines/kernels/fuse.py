"""The Restormer's modules in their fused forms, and :func:`fuse_restormer`, which swaps them in.

Each fused module is made from the original's weights and computes the same function with the
kernels of this package on float16/bfloat16 CUDA tensors (the PyTorch references elsewhere, so
that the swap can be checked on a CPU). This is the one place that knows hidiff.restormer's
block classes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engines.kernels.gated_dwconv import gated_dwconv3x3
from engines.kernels.gdfn_block import gdfn_block
from engines.kernels.halo_tiles import depthwise_taps
from engines.kernels.head_gram import head_cosine
from engines.kernels.mdta_block import mdta_apply, mdta_cosine
from engines.kernels.norm_matmul import conv1x1_residual, norm_conv1x1
from engines.kernels.prior_attention import fold_prior_attention
from engines.kernels.prior_attention import prior_attention as fused_prior_attention
from hidiff.restormer import GDFN, HIM, LayerNorm, TransformerBlock, modulate


def fuse_restormer(restormer: nn.Module, *, gates: bool = True, norms: bool = True, prior_attention: bool = True,
                   head_gram: bool = True, whole_gdfn: bool = False, whole_mdta: bool = False) -> None:
    """Swap the modules of ``restormer`` (a :class:`~hidiff.restormer.PriorGuidedRestormer`, or any
    module holding its blocks) for their fused forms, in place, with the same weights:

    - ``gates``: every GDFN's depthwise convolution and GELU gate as one kernel (:class:`FusedGateGDFN`);
    - ``norms``: every Transformer block without the prior's modulation (all but the bottleneck's)
      with its LayerNorms inside the 1x1 projections after them and its residual additions inside
      the projections before them (:class:`FusedNormBlock`);
    - ``head_gram``: in the blocks ``norms`` fuses, MDTA's per-head cosines from one pass over q
      and k (:func:`~engines.kernels.head_gram.head_cosine`) instead of cuBLAS's Gram product of
      all channels; needs ``norms``;
    - ``whole_gdfn``: in the blocks ``norms`` fuses, the whole feed-forward half (LayerNorm, both
      projections, depthwise convolution, gate, residual) as one kernel
      (:func:`~engines.kernels.gdfn_block.gdfn_block`); needs ``norms``;
    - ``whole_mdta``: in the blocks ``norms`` fuses, the attention half in two kernels that never
      write q, k or v (:mod:`~engines.kernels.mdta_block`); needs ``norms``, replaces ``head_gram``
      there;
    - ``prior_attention``: every HIM (the cross-attention to the prior tokens, with its LayerNorm)
      as one kernel (:class:`FusedHIM`).

    Call it on the model in its final device and dtype (the folded weights are computed once) and
    before ``torch.compile``. The kernels run where :func:`~engines.kernels.unavailable_reason`
    finds nothing missing.
    """
    for name, wanted in (("head_gram", head_gram), ("whole_gdfn", whole_gdfn), ("whole_mdta", whole_mdta)):
        if wanted and not norms:
            raise ValueError(f"{name}=True runs inside the blocks that norms=True fuses: pass norms=True, or "
                             f"{name}=False")
    if gates:
        _swap(restormer, lambda m: isinstance(m, GDFN), FusedGateGDFN)
    if norms:  # after the gates: a fused block keeps its GDFN's fused gate
        _swap(restormer, lambda m: isinstance(m, TransformerBlock) and not m.attn.modulated,
              lambda block: FusedNormBlock(block, head_gram=head_gram, whole_gdfn=whole_gdfn,
                                           whole_mdta=whole_mdta))
    if prior_attention:
        _swap(restormer, lambda m: isinstance(m, HIM), FusedHIM)


def _swap(model: nn.Module, wanted: Callable[[nn.Module], bool], fused: Callable[[Any], nn.Module]) -> None:
    """Replace every module inside ``model`` for which ``wanted`` holds with ``fused(module)``, in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if wanted(child):
                setattr(parent, name, fused(child))


class FusedGateGDFN(nn.Module):
    """A GDFN whose depthwise convolution and gate run as
    :func:`~engines.kernels.gated_dwconv.gated_dwconv3x3` (same modules, same weights)."""

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


class NormProjection(nn.Module):
    """A channels LayerNorm followed by a 1x1 convolution, folded into one (K, N) matrix:
    conv(LN(x)) = W (gamma * x_hat + beta) + b = (W diag(gamma)) x_hat + (W beta + b), run as
    :func:`~engines.kernels.norm_matmul.norm_conv1x1`.

    Made from the modules' weights when fused (an inference form: later changes to the original
    modules are not seen)."""

    weight_t: torch.Tensor  # (K, N): (W diag(gamma))^T
    bias: torch.Tensor  # (N,): W beta + b

    def __init__(self, norm: LayerNorm, conv: nn.Conv2d):
        super().__init__()
        if tuple(conv.kernel_size) != (1, 1) or conv.groups != 1 or conv.in_channels != norm.body.weight.numel():
            raise ValueError(f"{type(self).__name__} needs a 1x1 convolution over the norm's "
                             f"{norm.body.weight.numel()} channels, got {conv}")
        with torch.no_grad():
            w = conv.weight.float().flatten(1)  # (N, K)
            gamma = norm.body.weight.float()
            bias = conv.bias.float() if conv.bias is not None else torch.zeros(w.shape[0], device=w.device)
            if norm.body.bias is not None:
                bias = bias + w @ norm.body.bias.float()
            self.register_buffer("weight_t", (w * gamma).t().contiguous().to(conv.weight.dtype))
            self.register_buffer("bias", bias.to(conv.weight.dtype))
        self.eps = norm.eps
        self.bias_free = norm.body.bias is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return norm_conv1x1(x, self.weight_t, self.bias, self.eps, self.bias_free)


class FusedNormBlock(nn.Module):
    """A Transformer block whose LayerNorms run inside the projections after them and whose
    residual additions run inside the projections before them
    (:func:`~engines.kernels.norm_matmul.conv1x1_residual`; same weights, folded).

    For blocks without the prior's modulation (``attn.modulated`` false). The GDFN may be a
    :class:`FusedGateGDFN`; its convolution and gate are kept. ``head_gram``: MDTA's per-head
    cosines from :func:`~engines.kernels.head_gram.head_cosine`, else as MDTA computes them.
    ``whole_gdfn``: the feed-forward half as one :func:`~engines.kernels.gdfn_block.gdfn_block`.
    ``whole_mdta``: the attention half as :func:`~engines.kernels.mdta_block.mdta_cosine` and
    :func:`~engines.kernels.mdta_block.mdta_apply` (q, k and v never in memory)."""

    w_out_t: torch.Tensor  # (HIDDEN, C): the GDFN's output projection, transposed (whole_gdfn only)
    ffn_taps: torch.Tensor  # the GDFN's depthwise filters in the kernel's layout (whole_gdfn only)
    qkv_taps: torch.Tensor  # MDTA's depthwise filters in the kernels' layout (whole_mdta only)

    def __init__(self, block: TransformerBlock, head_gram: bool = True, whole_gdfn: bool = False,
                 whole_mdta: bool = False):
        super().__init__()
        attn, ffn = block.attn, block.ffn
        if attn.modulated or ffn.modulated:
            raise ValueError(f"{type(self).__name__} needs a block without the prior's modulation: it sits "
                             "between the norm and the projection")
        self.attn = attn
        self.ffn = ffn
        self.qkv = NormProjection(block.norm1, attn.qkv)
        self.project_in = NormProjection(block.norm2, ffn.project_in)
        self.head_gram = head_gram
        self.whole_gdfn = whole_gdfn
        self.whole_mdta = whole_mdta
        # The whole-block kernels' layouts of project_out and the depthwise filters; the
        # per-operation path reads the weights themselves.
        if whole_gdfn:
            self.register_buffer("w_out_t", ffn.project_out.weight.detach().flatten(1).t().contiguous())
            self.register_buffer("ffn_taps", depthwise_taps(ffn.dwconv.weight.detach(), 2))
        if whole_mdta:
            self.register_buffer("qkv_taps", depthwise_taps(attn.qkv_dwconv.weight.detach(), 3))

    def _gate(self, hidden: torch.Tensor) -> torch.Tensor:
        conv = self.ffn.dwconv
        if isinstance(self.ffn, FusedGateGDFN):
            return gated_dwconv3x3(hidden, conv.weight, conv.bias)
        y1, y2 = conv(hidden).chunk(2, dim=1)
        return F.gelu(y1) * y2

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        return self.feed_forward(self.attention(x))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """x + MDTA(LN1(x)): LN1 inside the qkv projection, the residual inside M v; with
        ``whole_mdta`` two kernels that recompute q, k and v inside their tiles."""
        if self.whole_mdta:
            norm, conv = self.qkv, self.attn.qkv_dwconv
            weights = (norm.weight_t, norm.bias, self.qkv_taps, conv.bias)
            cosine = mdta_cosine(x, *weights, self.attn.num_heads, norm.eps, norm.bias_free)
            mixing = self.attn.mixing_from_cosine(cosine, x.dtype)
            return mdta_apply(x, *weights, mixing, self.attn.project_out.bias, norm.eps, norm.bias_free)
        c = x.shape[1]
        qkv = self.attn.qkv_dwconv(self.qkv(x)).flatten(2)  # (B, 3C, H*W)
        qk, v = qkv[:, : 2 * c], qkv[:, 2 * c :]
        if self.head_gram:
            mixing = self.attn.mixing_from_cosine(head_cosine(qk, self.attn.num_heads), qk.dtype)
        else:
            mixing = self.attn.mixing(qk)
        return conv1x1_residual(v, mixing, self.attn.project_out.bias, x)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + GDFN(LN2(x)): one gdfn_block kernel (``whole_gdfn``), else LN2 inside project_in and
        the residual inside project_out."""
        out = self.ffn.project_out
        if self.whole_gdfn:
            conv, norm_in = self.ffn.dwconv, self.project_in
            return gdfn_block(x, norm_in.weight_t, norm_in.bias, self.ffn_taps, conv.bias, self.w_out_t, out.bias,
                              norm_in.eps, norm_in.bias_free)
        return conv1x1_residual(self._gate(self.project_in(x)), out.weight.flatten(1), out.bias, x)


class FusedHIM(nn.Module):
    """A :class:`~hidiff.restormer.HIM` run as :func:`~engines.kernels.prior_attention.prior_attention`:
    same weights, LN1's affine and q's bias folded once (an inference form: later changes to the
    original module are not seen); the prior's norm and key/value projection run as before, on
    its few tokens."""

    wq_gamma: torch.Tensor  # (C, C): W_q diag(gamma)
    q0: torch.Tensor  # (C,): W_q beta + b_q

    def __init__(self, him: HIM):
        super().__init__()
        self.num_heads = him.num_heads
        self.scale = him.scale
        self.norm2 = him.norm2
        self.kv = him.kv
        self.proj = him.proj
        self.eps = him.norm1.eps
        self.bias_free = him.norm1.body.bias is None
        with torch.no_grad():
            w_q = him.q.weight.float()
            q0 = him.q.bias.float() if him.q.bias is not None else torch.zeros(w_q.shape[0], device=w_q.device)
            if him.norm1.body.bias is not None:
                q0 = q0 + w_q @ him.norm1.body.bias.float()
            self.register_buffer("wq_gamma", (w_q * him.norm1.body.weight.float()).to(him.q.weight.dtype))
            self.register_buffer("q0", q0.to(him.q.weight.dtype))

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(self.norm2(prior)).chunk(2, dim=-1)  # (B, T, C) each
        a_matrix, a_offset, b_matrix = fold_prior_attention(k, v, self.num_heads, self.scale, self.wq_gamma,
                                                            self.q0, self.proj.weight)
        return fused_prior_attention(x, a_matrix.to(x.dtype), a_offset, b_matrix.to(x.dtype), self.proj.bias,
                                     prior.shape[1], self.eps, self.bias_free)
