"""Latent encoders: LE (stage 1, input concat(sharp, blur)) and LE_DM (stage 2, input blur).

PixelUnshuffle(4), a conv stem, residual conv blocks, adaptive average pooling to a group x group
grid of N = group**2 tokens, a token/channel-mixing MLP and a final projection to C' = 4 * embed_dim
channels (paper Sec. 3.2). Official types ``latent_encoder_gelu`` and ``latent_encoder_lrelu``;
parameter names follow the official checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hidiff.config import EncoderConfig


def adaptive_pool_matrix(size: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, size) averaging matrix with ``nn.AdaptiveAvgPool`` bins: bin i covers
    [floor(i * size / bins), ceil((i + 1) * size / bins)).

    Built from ``arange(size)`` so an exported graph computes it from the input's shape: exact for
    every H and W (a traced ``AdaptiveAvgPool2d`` bakes the example's kernel size into the graph).
    """
    i = torch.arange(bins, device=like.device)
    start = (i * size) // bins
    end = ((i + 1) * size + bins - 1) // bins
    pos = torch.arange(size, device=like.device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(torch.float32) / (end - start)[:, None].to(torch.float32)


def adaptive_avg_pool2d(x: torch.Tensor, bins: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, bins, bins), equal to ``nn.AdaptiveAvgPool2d(bins)`` for any H, W."""
    rows = adaptive_pool_matrix(x.shape[-2], bins, x).to(x.dtype)
    cols = adaptive_pool_matrix(x.shape[-1], bins, x).to(x.dtype)
    return rows @ x @ cols.transpose(0, 1)


class Float32LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameter names) whose statistics are computed in float32 in a half model.

    Eagerly that is one ``F.layer_norm`` kernel (it accumulates half inputs in float32); an ONNX
    export writes the float32 island out as casts, which TensorRT's strong typing needs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class MixerMLP(nn.Module):
    """Token-mixing then channel-mixing MLP over (B, N, C), each with a pre-LayerNorm and a residual."""

    def __init__(self, num_patches: int, embed_dims: int, patch_expansion: float, channel_expansion: float):
        super().__init__()
        patch_hidden = int(patch_expansion * num_patches)
        channel_hidden = int(channel_expansion * embed_dims)
        self.patch_mixer = nn.Sequential(
            nn.Linear(num_patches, patch_hidden), nn.GELU(), nn.Linear(patch_hidden, num_patches)
        )
        self.channel_mixer = nn.Sequential(
            nn.Linear(embed_dims, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, embed_dims)
        )
        self.norm1 = Float32LayerNorm(embed_dims)
        self.norm2 = Float32LayerNorm(embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.patch_mixer(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mixer(self.norm2(x))


class LatentEncoder(nn.Module):
    """forward(blur, sharp=None): blur (B, 3, H, W), H and W multiples of 4 -> (B, N, C').

    With ``sharp`` (stage 1's LE) the input is concat(sharp, blur) on channels, in that order.
    """

    def __init__(self, cfg: EncoderConfig = EncoderConfig()):
        super().__init__()
        self.cfg = cfg
        e, gelu = cfg.embed_dim, cfg.activation == "gelu"

        def act() -> nn.Module:
            return nn.GELU() if gelu else nn.LeakyReLU(0.1, inplace=True)

        self.group = cfg.group
        self.pixel_unshuffle = nn.PixelUnshuffle(4)
        self.conv1 = nn.Sequential(nn.Conv2d(cfg.in_chans * 16, e, 3, 1, 1), act())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(e, e, 3, 1, 1), act(), nn.Conv2d(e, e, 3, 1, 1)) for _ in range(cfg.block_num)
        )
        if gelu:
            self.conv2: nn.Module = nn.Conv2d(e, e, 3, 1, 1)
            tokens_dim = e
        else:
            self.conv2 = nn.Sequential(
                nn.Conv2d(e, e * 2, 3, padding=1), act(),
                nn.Conv2d(e * 2, e * 2, 3, padding=1), act(),
                nn.Conv2d(e * 2, e * 4, 3, padding=1), act(),
            )
            tokens_dim = e * 4
        self.mlp = MixerMLP(cfg.group**2, tokens_dim, cfg.patch_expansion, cfg.channel_expansion)
        self.end = nn.Sequential(nn.Linear(tokens_dim, e * 4), act())

    def forward(self, blur: torch.Tensor, sharp: torch.Tensor | None = None) -> torch.Tensor:
        x = blur if sharp is None else torch.cat([sharp, blur], dim=1)
        x = self.conv1(self.pixel_unshuffle(x))
        for block in self.blocks:
            x = block(x) + x
        x = adaptive_avg_pool2d(self.conv2(x), self.group)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        return self.end(self.mlp(x))
