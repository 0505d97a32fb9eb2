"""The nine-tap form of the depthwise convolutions against F.conv2d, and the in-place module swap."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hidiff import HIDiff
from hidiff.config import HIDiffConfig
from hidiff.taps import DepthwiseTaps, depthwise3x3_taps, use_depthwise_taps


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_taps_equal_the_convolution(bias, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 9, 13, generator=g)
    weight = torch.randn(6, 1, 3, 3, generator=g)
    b = torch.randn(6, generator=g) if bias else None
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    expected = F.conv2d(x, weight, b, padding=1, groups=6)
    torch.testing.assert_close(depthwise3x3_taps(x, weight, b), expected, rtol=1e-5, atol=1e-5)


def test_model_swap_keeps_parameters_and_output():
    cfg = HIDiffConfig.from_dict({"network_g": {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                                                "heads": [1, 2, 2, 4], "embed_dim": 8},
                                  "network_le_dm": {"embed_dim": 8, "block_num": 1},
                                  "network_d": {"in_channel": 32, "out_channel": 32, "inner_channel": 32,
                                                "block_num": 1}})
    torch.manual_seed(0)
    model = HIDiff(cfg).eval()
    keys = list(model.state_dict())
    depthwise = sum(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    blur = torch.rand(1, 3, 32, 40)
    noise = model.make_noise(1, torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(blur, noise=noise)
        swapped = use_depthwise_taps(model)
        got = model(blur, noise=noise)
    assert swapped == depthwise > 0
    assert sum(isinstance(m, DepthwiseTaps) for m in model.modules()) == swapped
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert use_depthwise_taps(model) == 0  # already swapped
