"""Batch mixing of training pairs: mixup (Restormer's ``mixing_augs``) and CutMix.

Both act on a whole batch and mix each pair with another pair of the same batch, the blurry and
the sharp images alike, so the blurry side stays the (linear) blur of the sharp side away from
CutMix's box edges::

    mixup:   sharp <- lam * sharp + (1 - lam) * sharp[perm]      (the same for blur)
    cutmix:  a box of area (1 - lam) of every image replaced by its partner's, in blur and sharp

lam ~ Beta(beta, beta). Each batch draws mixup with probability ``mixup``, else CutMix with
probability ``cutmix``, else nothing (Restormer's ``use_identity: true`` is mixup 0.5). Every draw
comes from (seed, iteration, rank): a resumed run mixes exactly as the uninterrupted one.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from hidiff.training.config import MixingConfig
from hidiff.training.data import sample_seed

MIXING_STREAM = 0x6D6978  # keeps these draws apart from the other (seed, iteration, rank) streams


def mix_batch(blur: torch.Tensor, sharp: torch.Tensor, config: MixingConfig, seed: int, iteration: int,
              rank: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(blur, sharp, what was done: "mixup", "cutmix" or "none") for one (B, C, H, W) batch."""
    if not config.enabled or blur.shape[0] < 2:
        return blur, sharp, "none"
    rng = np.random.default_rng(sample_seed(seed, iteration, rank, MIXING_STREAM))
    choice = rng.uniform()
    lam = float(rng.beta(config.beta, config.beta))
    perm = torch.from_numpy(rng.permutation(blur.shape[0])).to(blur.device)
    if choice < config.mixup:
        return torch.lerp(blur[perm], blur, lam), torch.lerp(sharp[perm], sharp, lam), "mixup"
    if choice < config.mixup + config.cutmix:
        top, left, height, width = _box(rng, blur.shape[-2], blur.shape[-1], 1.0 - lam)
        return _paste(blur, perm, top, left, height, width), _paste(sharp, perm, top, left, height, width), "cutmix"
    return blur, sharp, "none"


def _box(rng: np.random.Generator, height: int, width: int, area: float) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a box of about ``area`` of the image, its centre uniform and
    the box clipped to the image (CutMix, Yun et al. 2019)."""
    side = math.sqrt(area)
    box_h, box_w = round(height * side), round(width * side)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = max(cy - box_h // 2, 0), min(cy + (box_h + 1) // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + (box_w + 1) // 2, width)
    return top, left, bottom - top, right - left


def _paste(images: torch.Tensor, perm: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    out = images.clone()
    region = (..., slice(top, top + height), slice(left, left + width))
    out[region] = images[perm][region]
    return out
