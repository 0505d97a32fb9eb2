"""AdamW and the learning-rate schedule HI-Diff trains with (BasicSR's CosineAnnealingRestartCyclicLR).

The schedule, as hi_diff/utils/lr_scheduler.py defines it: cumulative periods P_1 < P_2 < ...;
at iteration i (counted from 1) the cycle k is the first with i <= P_k, and

    lr(i) = eta_min_k + w_k * 0.5 * (lr_0 - eta_min_k) * (1 + cos(pi * (i - P_{k-1}) / period_k))

with P_0 = 0. BasicSR steps the scheduler at the start of iteration i, so iteration i trains with
lr(i). Here the scheduler is stepped after the optimizer (PyTorch's order) and its value after
``last_epoch`` completed steps is lr(last_epoch + 1): the same learning rate at every iteration.
Past the last period the official code fails; we hold the last cycle's end value.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LRScheduler

from hidiff.training.config import OptimizerConfig, SchedulerConfig


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over ``params``; ``fused`` (CUDA) updates all parameters in one kernel, which matters
    for small models whose step is bound by kernel launches."""
    return torch.optim.AdamW(list(params), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas, fused=fused)


def cyclic_cosine_lr(iteration: int, base_lr: float, cfg: SchedulerConfig) -> float:
    """lr(iteration), iteration counted from 1 (the formula of the module docstring)."""
    boundary = 0
    for period, weight, eta_min in zip(cfg.periods, cfg.restart_weights, cfg.eta_mins):
        if iteration <= boundary + period:
            progress = (iteration - boundary) / period
            return eta_min + weight * 0.5 * (base_lr - eta_min) * (1.0 + math.cos(math.pi * progress))
        boundary += period
    # Past the end: the last cycle's final value (progress 1, cos = -1).
    return cfg.eta_mins[-1]


class CosineAnnealingRestartCyclicLR(LRScheduler):
    """BasicSR's cyclic cosine schedule with per-cycle minima. After ``last_epoch`` optimizer
    steps the learning rate is lr(last_epoch + 1), the one the next iteration trains with."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, last_epoch: int = -1):
        self.periods = tuple(int(p) for p in cfg.periods)
        self.restart_weights = tuple(float(w) for w in cfg.restart_weights)
        self.eta_mins = tuple(float(e) for e in cfg.eta_mins)
        super().__init__(optimizer, last_epoch)

    def _config(self) -> SchedulerConfig:
        return SchedulerConfig(periods=self.periods, restart_weights=self.restart_weights, eta_mins=self.eta_mins)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        cfg = self._config()
        return [cyclic_cosine_lr(self.last_epoch + 1, float(base_lr), cfg) for base_lr in self.base_lrs]
