"""The denoising networks of the prior diffusion (official ``network_d``).

``Denoiser`` (type ``denoising``, GoPro release): input concat(z_t, t * learned scale, c) on the
channel axis, a Linear, token/channel-mixing MLP blocks and a Linear + GELU back to C'.
``SimpleDenoiser`` (type ``simple_denoise``, RealBlur releases): concat(c, t / max_period, z_t)
through a residual-free stack of Linear + LeakyReLU layers.

Both take ``forward(z, c, t)``: z and c (B, N, C'), t the step number as the network sees it,
a tensor broadcastable to (B,) (one value per sample, or one for the batch). Both predict eps.
"""
from __future__ import annotations

import torch
from torch import nn

from hidiff.config import DenoiserConfig
from hidiff.latent_encoder import MixerMLP


def _per_sample(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """t as (B, N, 1) in z's dtype."""
    t = t.to(z.dtype).reshape(-1, 1, 1)
    return t.expand(z.shape[0], z.shape[1], 1)


class Denoiser(nn.Module):
    def __init__(self, cfg: DenoiserConfig = DenoiserConfig()):
        super().__init__()
        self.cfg = cfg
        # torch.full, not a product: HIDiff.load builds the network on the meta device to check a
        # file's shapes, where arithmetic would import torch._dynamo (seconds).
        self.time_mlp = nn.Parameter(torch.full((1,), float(cfg.layerscale_value)))
        self.first_layer = nn.Sequential(
            nn.Linear(cfg.in_channel * 3, cfg.inner_channel), nn.LeakyReLU(negative_slope=0.2, inplace=True)
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(
                MixerMLP(cfg.group**2, cfg.inner_channel, cfg.patch_expansion, cfg.channel_expansion), nn.GELU()
            )
            for _ in range(cfg.block_num - 2)
        )
        self.final_layer = nn.Sequential(nn.Linear(cfg.inner_channel, cfg.out_channel), nn.GELU())

    def forward(self, z: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # The official code feeds t as a tensor of z's full shape; t * scale is one value per sample.
        t_embed = (_per_sample(t, z) * self.time_mlp).expand_as(z)
        x = self.first_layer(torch.cat([z, t_embed, c], dim=-1))
        for block in self.blocks:
            x = block(x)
        return self.final_layer(x)


class ResidualMLP(nn.Module):
    # Named as the official ``ResMLP``: a Linear + LeakyReLU (the official layer has no skip).
    def __init__(self, n_feats: int):
        super().__init__()
        self.resmlp = nn.Sequential(nn.Linear(n_feats, n_feats), nn.LeakyReLU(0.1, inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resmlp(x)


class SimpleDenoiser(nn.Module):
    def __init__(self, cfg: DenoiserConfig = DenoiserConfig(kind="simple_denoise")):
        super().__init__()
        self.cfg = cfg
        self.max_period = cfg.timesteps * 10
        c = 4 * cfg.n_feats
        layers: list[nn.Module] = [nn.Linear(c * 2 + 1, c), nn.LeakyReLU(0.1, inplace=True)]
        layers += [ResidualMLP(c) for _ in range(cfg.n_denoise_res)]
        self.resmlp = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t_embed = _per_sample(t, z) / self.max_period
        return self.resmlp(torch.cat([c, t_embed, z], dim=-1))


def build_denoiser(cfg: DenoiserConfig) -> nn.Module:
    return Denoiser(cfg) if cfg.kind == "denoising" else SimpleDenoiser(cfg)
