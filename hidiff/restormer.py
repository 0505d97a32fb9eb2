"""The prior-guided Restormer of HI-Diff (official ``network_g``, type ``Transformer``).

Restormer (Zamir et al., CVPR 2022) with the paper's two additions: the Hierarchical Integration
Module (HIM, Sec. 3.3) in front of every encoder/decoder level, a cross-attention from the feature
map to the prior tokens, and at the bottleneck a modulation of each block's attention and FFN
input by the pooled prior. The multi-scale prior (Fig. 2) turns z1 = [B, N, C'] into
z2 = [B, N/4, C'] and z3 = [B, C'].

Parameter names follow the official checkpoints (``encoder_level1.blocks.0.attn.qkv.weight``,
``down_1.1.weight``, ...) so that the release loads strictly.

Precision: every statistic over many elements runs in float32 whatever the module's dtype (the
LayerNorm moments, the L2 norms over H*W and the q k^T product that contracts over H*W); in a
float32 model the casts are no-ops. This makes the half-precision model, and the fp16 ONNX graph
exported from it, safe at 1920x1080 where a sum of squares over H*W overflows float16.

Layout: the modules run in either memory format; in channels-last memory (``model.to(
memory_format=torch.channels_last)``, what the runtime's PyTorch backend uses on CUDA) the
LayerNorms over channels and HIM's tokens are views, and MDTA's products read q, k, v in place.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hidiff.config import RestormerConfig


class LayerNormParams(nn.Module):
    """Holds the affine parameters under the official names (``norm.body.weight/bias``)."""

    def __init__(self, dim: int, with_bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if with_bias else None


class LayerNorm(nn.Module):
    """LayerNorm over channels, its moments computed in float32.

    ``channels_first``: x is (B, C, H, W) and is normalised over C (Restormer's blocks);
    otherwise x is (B, N, C) (HIM's token norms). ``BiasFree`` divides by the standard deviation
    without subtracting the mean, as Restormer defines it.

    On a channels-last tensor the permutes are views, so the norm reads and writes the feature
    map once. Eagerly, ``F.layer_norm`` accumulates the moments of a float16 input in float32
    inside its kernel; in an ONNX export the float32 island is written out as casts around one
    ``LayerNormalization`` node, because TensorRT's strongly typed builder computes a node in
    its input's type.
    """

    def __init__(self, dim: int, kind: str = "WithBias", channels_first: bool = True, eps: float = 1e-5):
        super().__init__()
        self.body = LayerNormParams(dim, with_bias=kind == "WithBias")
        self.channels_first = channels_first
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:
            x = x.permute(0, 2, 3, 1)
        y = self._normalise_last_axis(x)
        return y.permute(0, 3, 1, 2) if self.channels_first else y

    def _normalise_last_axis(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.body.weight, self.body.bias
        if bias is not None and not torch.onnx.is_in_onnx_export():
            return F.layer_norm(x, (x.shape[-1],), weight.to(x.dtype), bias.to(x.dtype), self.eps)
        xf = x.float()
        if bias is not None:
            y = F.layer_norm(xf, (xf.shape[-1],), weight.float(), bias.float(), self.eps)
        else:
            var = xf.var(-1, keepdim=True, unbiased=False)
            y = xf * torch.rsqrt(var + self.eps) * weight.float()
        return y.to(x.dtype)


def modulate(x: torch.Tensor, ln1: nn.Linear, ln2: nn.Linear, prior: torch.Tensor) -> torch.Tensor:
    """x * Linear(z3) + Linear(z3): the bottleneck's use of the pooled prior z3 (B, C')."""
    scale = ln1(prior)[:, :, None, None]
    shift = ln2(prior)[:, :, None, None]
    return x * scale + shift


class GDFN(nn.Module):
    """Gated-Dconv Feed-Forward Network (Restormer Sec. 3.2)."""

    def __init__(self, dim: int, expansion: float, bias: bool, prior_channels: int, modulated: bool):
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)
        if modulated:
            self.ln1 = nn.Linear(prior_channels, dim)
            self.ln2 = nn.Linear(prior_channels, dim)
        self.modulated = modulated

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        if self.modulated and prior is not None:
            x = modulate(x, self.ln1, self.ln2, prior)
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


_NO_BMM_OUT_DTYPE: set[tuple[str, torch.dtype]] = set()  # (device type, dtype) where the kernel is missing


def _bmm_float32_out(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """a @ b with a float32 result, for float16/bfloat16 CUDA operands: cuBLAS accumulates in
    float32 and writes float32, so a sum over H*W terms neither overflows nor needs float32
    copies of the operands. Returns None where PyTorch has no such kernel (remembered, so the
    next call does not try again)."""
    key = (a.device.type, a.dtype)
    if key in _NO_BMM_OUT_DTYPE:
        return None
    try:
        return torch.bmm(a, b, out_dtype=torch.float32)
    except torch.cuda.OutOfMemoryError:
        raise
    except (NotImplementedError, RuntimeError, TypeError):
        _NO_BMM_OUT_DTYPE.add(key)
        return None


def channel_cosine(qk: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """cos(q_i, k_j) over the last axis for every channel pair, from q and k stacked on the channel
    axis: (B, 2C, N) -> (B, C, C) float32. Equal to ``normalize(q) @ normalize(k)^T``
    (``F.normalize``'s eps).

    One Gram matrix [q; k] [q; k]^T holds q k^T and, on its diagonal, the squared norms: one
    matrix product reads q and k once, the normalisation is applied to the small product, and no
    reduction over N runs on its own (a separate ReduceL2 over H*W is slow in ONNX Runtime's CUDA
    provider). Statistics in float32: the product contracts over N = H*W terms."""
    c = qk.shape[1] // 2
    gram = None
    inference = not (torch.is_grad_enabled() and qk.requires_grad)  # bmm.dtype has no backward
    # meta tensors (shape-only traces, bench/traffic.py) follow the CUDA path
    on_gpu = qk.device.type in ("cuda", "meta")
    # Neither ONNX nor AOTInductor's C shim (torch 2.11) has bmm with an out_dtype: exports upcast.
    exporting = torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()
    if inference and on_gpu and qk.dtype in (torch.float16, torch.bfloat16) and not exporting:
        gram = _bmm_float32_out(qk, qk.transpose(1, 2))
    if gram is None:
        qk = qk.float()
        gram = torch.bmm(qk, qk.transpose(1, 2))
    norms = gram.diagonal(dim1=1, dim2=2).sqrt().clamp_min(eps)  # (B, 2C): |q_i|, then |k_j|
    return gram[:, :c, c:] / (norms[:, :c, None] * norms[:, None, c:])


def head_blocks(square: torch.Tensor, heads: int) -> torch.Tensor:
    """The diagonal blocks of (B, C, C): (B, heads, C/heads, C/heads)."""
    b, c, _ = square.shape
    d = c // heads
    return square.view(b, heads, d, heads, d).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)


def mix_channels(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image channel mixing (B, C', C) x (B, C, N) -> (B, C', N): a 1x1 convolution whose
    weights differ per image. The result keeps x's layout: channel-minor (channels-last) input
    gives channel-minor output, so no full-resolution transpose is made either way."""
    if x.stride(1) == 1 and x.shape[2] > 1 and not torch.onnx.is_in_onnx_export():
        return torch.bmm(x.transpose(1, 2), matrix.transpose(1, 2)).transpose(1, 2)
    return torch.bmm(matrix, x)


class MDTA(nn.Module):
    """Multi-Dconv head Transposed self-Attention (Restormer Sec. 3.1): attention across channels,
    a (C/h x C/h) map per head from L2-normalised q and k over all H*W positions.

    Computed as the paper writes it, reassociated so that nothing but the two matrix products
    touches the full-resolution q, k and v: the cosine similarities come from one Gram product of
    [q; k] (float32), and the output projection is folded into the attention, so
    ``project_out(attn @ v)`` is one product ``(W_out blockdiag(attn)) @ v`` per image.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool, prior_channels: int, modulated: bool):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        if modulated:
            self.ln1 = nn.Linear(prior_channels, dim)
            self.ln2 = nn.Linear(prior_channels, dim)
        self.modulated = modulated

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.modulated and prior is not None:
            x = modulate(x, self.ln1, self.ln2, prior)
        qkv = self.qkv_dwconv(self.qkv(x)).flatten(2)  # (B, 3C, H*W): q, k, v on the channel axis
        qk, v = qkv[:, : 2 * c], qkv[:, 2 * c :]
        out = mix_channels(self.mixing(qk), v).reshape(b, c, h, w)
        if self.project_out.bias is not None:
            out = out + self.project_out.bias[:, None, None]
        return out

    def mixing(self, qk: torch.Tensor) -> torch.Tensor:
        """W_out blockdiag(attn), (B, C, C) in qk's dtype, from q and k stacked on the channel axis
        (B, 2C, H*W): ``project_out(attn @ v)`` is this matrix times v (plus the bias)."""
        return self.mixing_from_cosine(head_blocks(channel_cosine(qk), self.num_heads), qk.dtype)

    def mixing_from_cosine(self, cosine: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """:meth:`mixing` from the heads' cosines normalize(q_h) normalize(k_h)^T, (B, heads, C/h, C/h)
        float32 (however they were computed): (B, C, C) in ``dtype``."""
        b, c = cosine.shape[0], cosine.shape[1] * cosine.shape[2]
        # softmax(temperature * normalize(q) normalize(k)^T) per head, float32
        attn = (cosine * self.temperature.float()).softmax(dim=-1)  # (B, heads, C/h, C/h)
        # project_out(attn @ v) = (W_out blockdiag(attn)) @ v
        w_out = self.project_out.weight.float().view(c, self.num_heads, c // self.num_heads)
        return torch.einsum("ohd,bhde->bohe", w_out, attn).reshape(b, c, c).to(dtype)


class HIM(nn.Module):
    """Hierarchical Integration Module (paper Sec. 3.3, Eq. 3-4): cross-attention with queries
    from the feature map and keys/values from the prior tokens, added back to the features."""

    def __init__(self, dim: int, num_heads: int, bias: bool, prior_channels: int, norm_kind: str):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.norm1 = LayerNorm(dim, norm_kind, channels_first=False)
        self.norm2 = LayerNorm(prior_channels, norm_kind, channels_first=False)
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(prior_channels, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        q = self.q(self.norm1(tokens))
        k, v = self.kv(self.norm2(prior)).chunk(2, dim=-1)
        heads, d = self.num_heads, c // self.num_heads
        q = q.reshape(b, h * w, heads, d).transpose(1, 2)  # (B, heads, H*W, d)
        k = k.reshape(b, -1, heads, d).transpose(1, 2)  # (B, heads, N, d)
        v = v.reshape(b, -1, heads, d).transpose(1, 2)
        # softmax(q k^T * scale) v, in one fused kernel where the backend has one
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        tokens = tokens + self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, cfg: RestormerConfig, modulated: bool):
        super().__init__()
        prior_channels = 4 * cfg.embed_dim
        self.norm1 = LayerNorm(dim, cfg.LayerNorm_type)
        self.attn = MDTA(dim, num_heads, cfg.bias, prior_channels, modulated)
        self.norm2 = LayerNorm(dim, cfg.LayerNorm_type)
        self.ffn = GDFN(dim, cfg.ffn_expansion_factor, cfg.bias, prior_channels, modulated)

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), prior)
        return x + self.ffn(self.norm2(x), prior)


class Level(nn.Module):
    """One encoder/decoder level: HIM with the level's prior tokens when ``group > 1``, then the
    Transformer blocks; at ``group == 1`` (the bottleneck) the blocks are modulated by z3."""

    def __init__(self, dim: int, num_heads: int, num_blocks: int, group: int, cfg: RestormerConfig):
        super().__init__()
        self.group = group
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, cfg, modulated=group == 1) for _ in range(num_blocks)
        )
        if group > 1:
            self.him = HIM(dim, num_heads, cfg.bias, 4 * cfg.embed_dim, cfg.LayerNorm_type)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        block_prior: torch.Tensor | None = prior
        if self.group > 1:
            x = self.him(x, prior)
            block_prior = None
        for block in self.blocks:
            x = block(x, block_prior)
        return x


class Transpose12(nn.Module):
    """(B, N, C) <-> (B, C, N): token mixing as a Linear over the token axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


def token_reduction(tokens_in: int, tokens_out: int, channels: int) -> nn.Sequential:
    # Indices 1 and 3 hold the Linears, as the official ``down_1.1`` / ``down_1.3`` keys.
    return nn.Sequential(
        Transpose12(), nn.Linear(tokens_in, tokens_out), Transpose12(), nn.Linear(channels, channels)
    )


class Downsample(nn.Module):
    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_c: int, dim: int, bias: bool):
        super().__init__()
        self.proj = nn.Conv2d(in_c, dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class PriorGuidedRestormer(nn.Module):
    """Restormer guided by the prior ``z`` (B, N, C') at every scale.

    forward(blur, prior): blur (B, 3, H, W) with H, W multiples of 8; returns the sharp image,
    the network's residual added to the input (Restormer's global skip).
    """

    downsamplings = 3  # down1_2, down2_3, down3_4: each a 2x PixelUnshuffle of H and W
    multiple = 2**downsamplings  # what H and W must be multiples of

    def __init__(self, cfg: RestormerConfig = RestormerConfig()):
        super().__init__()
        self.cfg = cfg
        dim, heads, blocks, g = cfg.dim, cfg.heads, cfg.num_blocks, cfg.group
        channels = 4 * cfg.embed_dim
        # Multi-scale prior: z1 (N tokens) -> z2 (N/4 tokens) -> z3 (1 token, flattened).
        self.down_1 = token_reduction(g * g, (g * g) // 4, channels)
        self.down_2 = token_reduction((g * g) // 4, 1, channels)

        self.patch_embed = OverlapPatchEmbed(cfg.inp_channels, dim, cfg.bias)
        self.encoder_level1 = Level(dim, heads[0], blocks[0], g, cfg)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = Level(dim * 2, heads[1], blocks[1], g // 2, cfg)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = Level(dim * 4, heads[2], blocks[2], g // 2, cfg)
        self.down3_4 = Downsample(dim * 4)
        self.latent = Level(dim * 8, heads[3], blocks[3], 1, cfg)

        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, kernel_size=1, bias=cfg.bias)
        self.decoder_level3 = Level(dim * 4, heads[2], blocks[2], g // 2, cfg)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, kernel_size=1, bias=cfg.bias)
        self.decoder_level2 = Level(dim * 2, heads[1], blocks[1], g // 2, cfg)
        self.up2_1 = Upsample(dim * 2)  # no channel reduction at level 1
        self.decoder_level1 = Level(dim * 2, heads[0], blocks[0], g, cfg)
        self.refinement = Level(dim * 2, heads[0], cfg.num_refinement_blocks, g, cfg)
        self.output = nn.Conv2d(dim * 2, cfg.out_channels, kernel_size=3, padding=1, bias=cfg.bias)

    def multi_scale_prior(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z2 = self.down_1(z1)
        z3 = self.down_2(z2).flatten(1)
        return z1, z2, z3

    def forward(self, blur: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        z1, z2, z3 = self.multi_scale_prior(prior)

        enc1 = self.encoder_level1(self.patch_embed(blur), z1)
        enc2 = self.encoder_level2(self.down1_2(enc1), z2)
        enc3 = self.encoder_level3(self.down2_3(enc2), z2)
        latent = self.latent(self.down3_4(enc3), z3)

        dec3 = self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1))
        dec3 = self.decoder_level3(dec3, z2)
        dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1))
        dec2 = self.decoder_level2(dec2, z2)
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1), z1)
        dec1 = self.refinement(dec1, z1)
        return self.output(dec1) + blur
