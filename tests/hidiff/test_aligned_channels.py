"""Zero-padded channels (hidiff.aligned_channels) give the same Restormer output."""
from __future__ import annotations

import torch
from torch import nn

from hidiff.aligned_channels import align_channels
from hidiff.config import RestormerConfig
from hidiff.restormer import PriorGuidedRestormer


def test_padded_restormer_computes_the_same():
    # dim 12: GDFN hidden int(12 * 2.66) = 31 and int(24 * 2.66) = 63, both unaligned.
    cfg = RestormerConfig(dim=12, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4), embed_dim=8)
    torch.manual_seed(0)
    model = PriorGuidedRestormer(cfg).eval()
    blur = torch.rand(1, 3, 24, 32)
    prior = torch.randn(1, 16, 4 * cfg.embed_dim)
    with torch.no_grad():
        expected = model(blur, prior)
        changed = align_channels(model)
        got = model(blur, prior)
    gdfns = sum(1 for m in model.modules() if type(m).__name__ == "GDFN")
    assert changed == 3 * gdfns + 2
    hidden = {m.project_out.in_channels for m in model.modules() if type(m).__name__ == "GDFN"}
    assert hidden == {32, 64, 128, 256}  # from 31, 63, 127, 255
    assert model.patch_embed.proj.in_channels == 8 and model.output.out_channels == 8
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert align_channels(model) == 0  # already aligned


def test_channels_last_model_keeps_its_layout():
    cfg = RestormerConfig(dim=12, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4), embed_dim=8)
    model = PriorGuidedRestormer(cfg).eval().to(memory_format=torch.channels_last)
    align_channels(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
