"""The diffusion schedule of the prior: linear betas, precomputed tables, one reverse step.

Tables are computed in float64 from the betas and stored in float32, as the official code does.
Symbols follow DDPM (Ho et al. 2020) and the HI-Diff paper (Sec. 3.2, Eq. 5-6):

    alpha_t = 1 - beta_t,   abar_t = prod_{s <= t} alpha_s
    x0_hat  = sqrt(1 / abar_t) * z_t - sqrt(1 / abar_t - 1) * eps          (Eq. 6, predicted x0)
    z_{t-1} = coef1_t * x0_hat + coef2_t * z_t                              (posterior mean)
    coef1_t = beta_t * sqrt(abar_{t-1}) / (1 - abar_t)
    coef2_t = (1 - abar_{t-1}) * sqrt(alpha_t) / (1 - abar_t)

The reverse step adds no noise (the official sampler returns the posterior mean), so z_T is the
only randomness of inference. Indices t run 0 .. T-1 (t = T-1 is the first reverse step).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hidiff.config import ScheduleConfig


def make_betas(cfg: ScheduleConfig) -> np.ndarray:
    if cfg.schedule == "linear":
        return np.linspace(cfg.linear_start, cfg.linear_end, cfg.timesteps, dtype=np.float64)
    if cfg.schedule == "quad":
        return np.linspace(cfg.linear_start**0.5, cfg.linear_end**0.5, cfg.timesteps, dtype=np.float64) ** 2
    if cfg.schedule == "const":
        return np.full(cfg.timesteps, cfg.linear_end, dtype=np.float64)
    raise ValueError(f"unsupported beta schedule {cfg.schedule!r}; expected linear, quad or const")


@dataclass(frozen=True, eq=False)
class DiffusionSchedule:
    """Coefficient tables of length T (float32 tensors) and the sampler variant."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    clip_denoised: bool = True
    time_offset: int = 1

    @classmethod
    def from_config(cls, cfg: ScheduleConfig) -> "DiffusionSchedule":
        betas = make_betas(cfg)
        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        abar_prev = np.append(1.0, abar[:-1])

        def f32(a: np.ndarray) -> torch.Tensor:
            return torch.tensor(a, dtype=torch.float32)

        return cls(
            betas=f32(betas),
            alphas_cumprod=f32(abar),
            alphas_cumprod_prev=f32(abar_prev),
            sqrt_alphas_cumprod=f32(np.sqrt(abar)),
            sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - abar)),
            sqrt_recip_alphas_cumprod=f32(np.sqrt(1.0 / abar)),
            sqrt_recipm1_alphas_cumprod=f32(np.sqrt(1.0 / abar - 1.0)),
            posterior_mean_coef1=f32(betas * np.sqrt(abar_prev) / (1.0 - abar)),
            posterior_mean_coef2=f32((1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar)),
            # GoPro release: x0 clamped, the network sees t + 1. LDM path (RealBlur): neither.
            clip_denoised=not cfg.apply_ldm,
            time_offset=0 if cfg.apply_ldm else 1,
        )

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def timesteps(self) -> range:
        """Reverse order, T-1 .. 0."""
        return range(self.num_timesteps - 1, -1, -1)

    def network_time(self, t: int) -> int:
        """The step number the denoising network is fed at index t."""
        return t + self.time_offset

    def step(self, z: torch.Tensor, eps: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """One reverse step z_t -> z_{t-1} given the predicted noise eps (posterior mean)."""
        # 1. predicted x0 from the noise, Eq. (6)
        x0 = self.sqrt_recip_alphas_cumprod[t].to(z) * z - self.sqrt_recipm1_alphas_cumprod[t].to(z) * eps
        # 2. the prior lives in [-1, 1] in the GoPro release
        if self.clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        # 3. posterior mean of q(z_{t-1} | z_t, x0); no noise is added
        return self.posterior_mean_coef1[t].to(z) * x0 + self.posterior_mean_coef2[t].to(z) * z

    def q_sample(self, z0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z_T drawn from q(z_T | z0) for training, as the official stage 2 does it.

        The GoPro release passes abar_{T-1} where sqrt(abar_{T-1}) is meant:
        z_T = abar * z0 + sqrt(1 - abar**2) * noise. We keep that to match its checkpoints.
        The LDM path uses the textbook sqrt(abar) * z0 + sqrt(1 - abar) * noise.
        """
        t = self.num_timesteps - 1
        if self.time_offset == 1:
            a = self.alphas_cumprod[t].to(z0)
            return a * z0 + (1 - a**2).sqrt() * noise
        return self.sqrt_alphas_cumprod[t].to(z0) * z0 + self.sqrt_one_minus_alphas_cumprod[t].to(z0) * noise

    def to(self, device: torch.device | str) -> "DiffusionSchedule":
        moved: dict[str, Any] = {k: v.to(device) for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}
        return dataclasses.replace(self, **moved)
