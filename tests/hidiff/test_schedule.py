"""The schedule against values computed by hand from the formulas (GoPro release: T=8, linear betas 0.1 -> 0.99)."""
import math

import torch

from hidiff.config import ScheduleConfig
from hidiff.schedule import DiffusionSchedule


def hand_tables(T=8, start=0.1, end=0.99):
    betas = [start + (end - start) * i / (T - 1) for i in range(T)]
    abar, prod = [], 1.0
    for b in betas:
        prod *= 1.0 - b
        abar.append(prod)
    prev = [1.0] + abar[:-1]
    return {
        "betas": betas,
        "alphas_cumprod": abar,
        "sqrt_recip_alphas_cumprod": [math.sqrt(1 / a) for a in abar],
        "sqrt_recipm1_alphas_cumprod": [math.sqrt(1 / a - 1) for a in abar],
        "posterior_mean_coef1": [b * math.sqrt(p) / (1 - a) for b, p, a in zip(betas, prev, abar)],
        "posterior_mean_coef2": [(1 - p) * math.sqrt(1 - b) / (1 - a) for b, p, a in zip(betas, prev, abar)],
    }


def test_tables_match_hand_computation():
    s = DiffusionSchedule.from_config(ScheduleConfig())
    for name, values in hand_tables().items():
        got = getattr(s, name)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, torch.tensor(values, dtype=torch.float32), rtol=1e-6, atol=0, msg=name)
    # Spot values: beta_1 = 0.1 + 0.89/7, abar_0 = 0.9.
    assert abs(float(s.betas[1]) - (0.1 + 0.89 / 7)) < 1e-7
    assert abs(float(s.alphas_cumprod[0]) - 0.9) < 1e-7
    # First step has abar_prev = 1, so coef2_0 = 0: the last reverse step returns x0 itself.
    assert float(s.posterior_mean_coef2[0]) == 0.0


def test_reverse_step_is_eq6_then_posterior_mean():
    s = DiffusionSchedule.from_config(ScheduleConfig())
    h = hand_tables()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 16, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 16, 8, generator=g, dtype=torch.float64)
    for t in range(8):
        x0 = math.sqrt(1 / h["alphas_cumprod"][t]) * z - math.sqrt(1 / h["alphas_cumprod"][t] - 1) * eps
        x0 = x0.clamp(-1, 1)
        want = h["posterior_mean_coef1"][t] * x0 + h["posterior_mean_coef2"][t] * z
        got = s.step(z.float(), eps.float(), t).double()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_ldm_variant_does_not_clamp_and_feeds_t():
    gopro = DiffusionSchedule.from_config(ScheduleConfig())
    ldm = DiffusionSchedule.from_config(ScheduleConfig(timesteps=16, apply_ldm=True))
    assert (gopro.network_time(0), ldm.network_time(0)) == (1, 0)
    assert list(ldm.timesteps()) == list(range(15, -1, -1))
    z = torch.full((1, 4, 4), 5.0)
    eps = torch.zeros_like(z)
    # eps = 0 gives x0 = z / sqrt(abar) > 1: clamped in the GoPro variant, not in the LDM one.
    t = 3
    assert torch.allclose(gopro.step(z, eps, t), gopro.posterior_mean_coef1[t] + gopro.posterior_mean_coef2[t] * z)
    x0 = ldm.sqrt_recip_alphas_cumprod[t] * z
    assert torch.allclose(ldm.step(z, eps, t), ldm.posterior_mean_coef1[t] * x0 + ldm.posterior_mean_coef2[t] * z)


def test_q_sample_matches_official_forms():
    g = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(2, 16, 8, generator=g), torch.randn(2, 16, 8, generator=g)
    gopro = DiffusionSchedule.from_config(ScheduleConfig())
    a = hand_tables()["alphas_cumprod"][-1]
    # The GoPro release passes abar where sqrt(abar) is meant; we keep its formula.
    torch.testing.assert_close(gopro.q_sample(z0, noise), a * z0 + math.sqrt(1 - a * a) * noise)
    ldm = DiffusionSchedule.from_config(ScheduleConfig(apply_ldm=True))
    torch.testing.assert_close(ldm.q_sample(z0, noise), math.sqrt(a) * z0 + math.sqrt(1 - a) * noise)
