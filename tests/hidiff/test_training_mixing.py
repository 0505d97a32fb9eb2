"""hidiff.training.mixing: mixup and CutMix keep every blurry image the blur of its sharp image,
draw from (seed, iteration, rank) alone, and happen as often as configured."""
from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F

from hidiff.training.config import MixingConfig
from hidiff.training.mixing import mix_batch


def blurred_batch(batch: int = 6, size: int = 48) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(blur, sharp, kernel): random sharp images and their blur by one 5x5 box kernel per channel."""
    g = torch.Generator().manual_seed(0)
    sharp = torch.rand(batch, 3, size, size, generator=g)
    kernel = torch.full((3, 1, 5, 5), 1 / 25)
    return F.conv2d(sharp, kernel, padding=2, groups=3), sharp, kernel


def test_mixup_mixes_blur_and_sharp_alike() -> None:
    blur, sharp, kernel = blurred_batch()
    mixed_blur, mixed_sharp, kind = mix_batch(blur, sharp, MixingConfig(mixup=1.0), seed=1, iteration=3, rank=0)
    assert kind == "mixup"
    assert not torch.allclose(mixed_sharp, sharp)
    # blur is linear: the mixed blurry batch is still the blur of the mixed sharp batch
    torch.testing.assert_close(mixed_blur, F.conv2d(mixed_sharp, kernel, padding=2, groups=3))
    # each mixed image is lam * its own image + (1 - lam) * one partner, the same lam for all
    flat, own = mixed_sharp.flatten(1), sharp.flatten(1)
    fits = []
    for i in range(len(sharp)):
        for j in range(len(sharp)):
            if j != i:
                design = torch.stack([own[i], own[j]], dim=1)
                coeffs = torch.linalg.lstsq(design, flat[i, :, None]).solution.flatten()
                if torch.allclose(design @ coeffs, flat[i], atol=1e-5):
                    fits.append(coeffs)
    assert len(fits) == len(sharp)  # one partner each
    lams = torch.stack(fits)[:, 0]
    assert torch.allclose(lams, lams[0].expand_as(lams), atol=1e-4) and 0 < float(lams[0]) < 1
    assert torch.allclose(torch.stack(fits).sum(1), torch.ones(len(fits)), atol=1e-4)


def test_cutmix_pastes_one_box_of_a_partner_into_blur_and_sharp() -> None:
    blur, sharp, kernel = blurred_batch()
    mixed_blur, mixed_sharp, kind = mix_batch(blur, sharp, MixingConfig(cutmix=1.0), seed=2, iteration=5, rank=1)
    assert kind == "cutmix"
    changed = (mixed_sharp != sharp).any(dim=1)  # (B, H, W)
    assert bool(changed.any())
    rows, cols = changed.any(dim=(0, 2)).nonzero().flatten(), changed.any(dim=(0, 1)).nonzero().flatten()
    top, bottom, left, right = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    box = (..., slice(top, bottom), slice(left, right))
    for i in range(len(sharp)):
        # inside the box: another image's pixels, the same one in blur and sharp; outside: untouched
        partners = [j for j in range(len(sharp)) if j != i and torch.equal(mixed_sharp[i][box], sharp[j][box])]
        assert len(partners) == 1
        assert torch.equal(mixed_blur[i][box], blur[partners[0]][box])
        outside = torch.ones_like(changed[i])
        outside[top:bottom, left:right] = False
        assert torch.equal(mixed_sharp[i][:, outside], sharp[i][:, outside])
        assert torch.equal(mixed_blur[i][:, outside], blur[i][:, outside])
    # away from the box's edges (the kernel's reach) the blurry side is still the blur of the sharp side
    interior = (..., slice(top + 2, bottom - 2), slice(left + 2, right - 2))
    torch.testing.assert_close(mixed_blur[interior], F.conv2d(mixed_sharp, kernel, padding=2, groups=3)[interior])


def test_draws_depend_on_seed_iteration_and_rank_only() -> None:
    blur, sharp, _ = blurred_batch()
    config = MixingConfig(mixup=0.5, cutmix=0.5)
    first = mix_batch(blur, sharp, config, seed=7, iteration=11, rank=0)
    again = mix_batch(blur.clone(), sharp.clone(), config, seed=7, iteration=11, rank=0)
    assert first[2] == again[2] and torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    others = [mix_batch(blur, sharp, config, seed=s, iteration=i, rank=r)[1] for s, i, r in ((8, 11, 0), (7, 12, 0), (7, 11, 1))]
    assert all(not torch.equal(first[1], other) for other in others)


def test_each_batch_draws_mixup_cutmix_or_nothing_as_often_as_configured() -> None:
    blur, sharp, _ = blurred_batch(batch=2, size=8)
    config = MixingConfig(mixup=0.3, cutmix=0.2)
    kinds = collections.Counter(mix_batch(blur, sharp, config, seed=0, iteration=i, rank=0)[2] for i in range(2000))
    assert abs(kinds["mixup"] / 2000 - 0.3) < 0.04
    assert abs(kinds["cutmix"] / 2000 - 0.2) < 0.04
    assert abs(kinds["none"] / 2000 - 0.5) < 0.04


def test_off_by_default_and_nothing_to_mix_in_a_batch_of_one() -> None:
    blur, sharp, _ = blurred_batch()
    assert mix_batch(blur, sharp, MixingConfig(), seed=0, iteration=1, rank=0) == (blur, sharp, "none")
    single = mix_batch(blur[:1], sharp[:1], MixingConfig(mixup=1.0), seed=0, iteration=1, rank=0)
    assert single[2] == "none" and torch.equal(single[0], blur[:1]) and torch.equal(single[1], sharp[:1])


@pytest.mark.parametrize("values, message", [
    ({"mixup": 0.7, "cutmix": 0.5}, "sum to at most 1"),
    ({"mixup": -0.1}, "sum to at most 1"),
    ({"beta": 0.0}, "beta"),
])
def test_bad_settings_are_refused(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MixingConfig(**values)
