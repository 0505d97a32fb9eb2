"""hidiff.training.stages: each stage optimises exactly the official networks, computes the
official losses, and stage 2's gradient reaches the denoiser through the reverse steps."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from hidiff.model import HIDiff
from hidiff.training.config import LossConfig
from hidiff.training.stages import TRAINED_PARTS, build_objective


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sharp = torch.rand(2, 3, 32, 32, generator=g)
    return (sharp + 0.1 * torch.rand(2, 3, 32, 32, generator=g)).clamp(0, 1), sharp


@pytest.mark.parametrize("stage", [1, 2])
def test_only_the_stage_networks_get_gradients(stage: int) -> None:
    torch.manual_seed(0)
    model = HIDiff(tiny_config(), with_stage1_encoder=True)
    objective = build_objective(model, stage, LossConfig()).train()
    blur, sharp = batch()
    noise = torch.randn(2, *model.prior_shape)
    objective(blur, sharp, noise)["total"].backward()
    for part in ("restormer", "le", "le_dm", "denoiser"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        if part in TRAINED_PARTS[stage]:
            assert all(g is not None for g in grads), part
            assert sum(float(g.abs().sum()) for g in grads) > 0, part
        else:
            assert all(g is None for g in grads), part
    assert {id(p) for p in objective.trainable_parameters()} == {
        id(p) for part in TRAINED_PARTS[stage] for p in getattr(model, part).parameters()
    }
    if stage == 2:
        assert not model.le.training  # frozen target network


def test_stage2_loss_is_the_official_sum() -> None:
    torch.manual_seed(1)
    model = HIDiff(tiny_config(), with_stage1_encoder=True)
    objective = build_objective(model, 2, LossConfig(pixel_weight=1.0, prior_weight=0.5))
    blur, sharp = batch(1)
    noise = torch.randn(2, *model.prior_shape)
    losses = objective(blur, sharp, noise)
    with torch.no_grad():
        # official optimize_parameters (GoPro, apply_ldm False), restated
        z = model.le(blur, sharp)
        t = model.schedule.num_timesteps - 1
        abar = model.schedule.alphas_cumprod[t]
        z_hat = model.sample_prior(model.le_dm(blur), abar * z + (1 - abar**2).sqrt() * noise)
        l_pix = F.l1_loss(model.restormer(blur, z_hat), sharp)
        l_prior = 0.5 * F.l1_loss(z_hat, z)
    assert torch.allclose(losses["l_pix"], l_pix) and torch.allclose(losses["l_prior"], l_prior)
    assert torch.allclose(losses["total"], l_pix + l_prior)
    with pytest.raises(ValueError, match="noise"):
        objective(blur, sharp, None)


def test_training_needs_the_stage1_encoder() -> None:
    with pytest.raises(ValueError, match="with_stage1_encoder=True"):
        build_objective(HIDiff(tiny_config()), 1, LossConfig())
