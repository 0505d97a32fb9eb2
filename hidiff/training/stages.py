"""The two training objectives of HI-Diff (official HI_Diff_S1_model.py / HI_Diff_S2_model.py).

Stage 1 (Restormer + LE on the ground-truth prior):
    z = LE(blur, sharp)                          (LE sees concat(sharp, blur))
    L = L1(Restormer(blur, z), sharp)

Stage 2 (LE frozen; Restormer + LE_DM + denoiser trained jointly):
    z    = LE(blur, sharp)                       (target prior, no gradient)
    c    = LE_DM(blur)
    z_T  = q_sample(z, eps), eps ~ N(0, I)       (the forward process in one jump to t = T)
    z^   = the T reverse steps from z_T, WITH gradients through every step
    L    = L1(Restormer(blur, z^), sharp) + L1(z^, z)

Each objective is an ``nn.Module`` (so DistributedDataParallel can wrap it) holding the whole
HIDiff model; the networks a stage does not train have ``requires_grad`` off, which also keeps
DDP from waiting for gradients that never come.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hidiff.model import HIDiff
from hidiff.training.config import LossConfig

TRAINED_PARTS = {1: ("restormer", "le"), 2: ("restormer", "le_dm", "denoiser")}


class StageObjective(nn.Module):
    """forward(blur, sharp, noise) -> {"total": scalar, and each weighted term}.

    blur, sharp: (B, 3, P, P) float32 in [0, 1], P a multiple of 8 (training patches).
    noise: z_T's noise eps (B, N, C') for stage 2, ignored by stage 1.
    """

    stage: int

    def __init__(self, model: HIDiff, losses: LossConfig):
        super().__init__()
        if model.le is None:
            raise ValueError("training needs the stage-1 encoder LE: build HIDiff(config, with_stage1_encoder=True)")
        self.model = model
        self.losses = losses
        trained = TRAINED_PARTS[self.stage]
        for name in ("restormer", "le", "le_dm", "denoiser"):
            getattr(model, name).requires_grad_(name in trained)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The optimised (and gradient-clipped) parameters, in a fixed order."""
        return [p for name in TRAINED_PARTS[self.stage] for p in getattr(self.model, name).parameters()]

    def train(self, mode: bool = True) -> StageObjective:
        super().train(mode)
        if self.stage == 2:
            # LE is a frozen target network in stage 2.
            self.model.le.eval()  # type: ignore[union-attr]
        return self


class Stage1Objective(StageObjective):
    stage = 1

    def forward(self, blur: torch.Tensor, sharp: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        model = self.model
        z = model.le(blur, sharp)  # type: ignore[misc]
        out = model.restormer(blur, z)
        l_pix = self.losses.pixel_weight * F.l1_loss(out.float(), sharp.float())
        return {"total": l_pix, "l_pix": l_pix}


class Stage2Objective(StageObjective):
    stage = 2

    def forward(self, blur: torch.Tensor, sharp: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if noise is None:
            raise ValueError("stage 2 needs the forward-process noise eps (B, N, C')")
        model = self.model
        # 1. target prior from the frozen stage-1 encoder
        with torch.no_grad():
            z = model.le(blur, sharp)  # type: ignore[misc]
        # 2. condition from the blurry image
        cond = model.le_dm(blur)
        # 3. z_T ~ q(z_T | z), then the T reverse steps with gradients
        z_t = model.schedule.q_sample(z, noise.to(z))
        z_hat = model.sample_prior(cond, z_t)
        # 4. restore with the estimated prior
        out = model.restormer(blur, z_hat)
        l_pix = self.losses.pixel_weight * F.l1_loss(out.float(), sharp.float())
        l_prior = self.losses.prior_weight * F.l1_loss(z_hat.float(), z.float())
        return {"total": l_pix + l_prior, "l_pix": l_pix, "l_prior": l_prior}


def build_objective(model: HIDiff, stage: int, losses: LossConfig) -> StageObjective:
    if stage == 1:
        return Stage1Objective(model, losses)
    if stage == 2:
        return Stage2Objective(model, losses)
    raise ValueError(f"stage {stage}: expected 1 or 2")
