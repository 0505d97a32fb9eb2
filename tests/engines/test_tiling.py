"""Tiles cover the frame, blend exactly, and stay close to the untiled output; when a frame is tiled."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_config
from skimage import data

from engines.pipeline import Pipeline
from engines.tiling import Tiling, check_tile_size, plan_tiles, run_tiled, tile_weight
from engines.torch_backend import torch_engines
from hidiff.model import HIDiff


@pytest.mark.parametrize("height, width, tile, overlap", [(64, 64, 32, 8), (120, 72, 48, 16), (40, 200, 64, 0),
                                                          (16, 16, 64, 8)])
def test_tiles_cover_every_pixel_with_multiples_of_8(height, width, tile, overlap):
    tiles = plan_tiles(height, width, tile, tile, overlap)
    covered = np.zeros((height, width), int)
    for t in tiles:
        assert t.height % 8 == 0 and t.width % 8 == 0 and t.height <= tile and t.width <= tile
        assert t.top + t.height <= height and t.left + t.width <= width
        covered[t.top:t.top + t.height, t.left:t.left + t.width] += 1
    assert covered.min() >= 1


def test_blending_an_identity_restores_the_frame_exactly():
    x = torch.rand(2, 3, 72, 104)
    tiles = plan_tiles(72, 104, 40, 40, 12)
    out = run_tiled(lambda tile, prior: tile, x, torch.zeros(2, 16, 32), tiles, 12)
    torch.testing.assert_close(out, x, rtol=1e-6, atol=1e-6)
    w = tile_weight(tiles[0], 72, 104, 12, x.device)
    assert w.min() > 0 and w.max() == 1


def test_bad_tile_sizes():
    with pytest.raises(ValueError, match="multiple of 8"):
        check_tile_size(60, 8)
    with pytest.raises(ValueError, match="overlap"):
        check_tile_size(32, 16)


@pytest.mark.parametrize("fields, words", [
    ({"tile": 100}, "multiple of 8"), ({"tile": 64, "overlap": 32}, "overlap"),
    ({"overlap": -1}, "tile_overlap -1: expected >= 0"), ({"max_pixels": 10}, "max_pixels 10: expected None or at least 64"),
])
def test_bad_tiling_policies_are_refused(fields, words):
    with pytest.raises(ValueError, match=words):
        Tiling(**fields)


def test_tiled_output_stays_close_to_untiled_on_a_natural_image():
    # skimage's astronaut, area-downscaled to 128 x 128 so the test stays fast; 80 x 80 tiles
    # overlapping by 16 (the last tile flush with the edge, so 4 tiles overlapping by 32).
    # Measured with the tiny random model of tests/conftest.py (seed 0) on the CPU (float32):
    # max |diff| 0.010, PSNR 53.8 dB; the bounds leave room for BLAS rounding. At 512 x 512
    # with 256 x 256 tiles the same model gives max 0.027 (PSNR 47.7 dB), and with overlap 0
    # (hard seams) max 0.33: the blending is what keeps seams invisible.
    image = cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    blur = torch.from_numpy(image).permute(2, 0, 1).flip(0)[None]  # channels as the runtime gets them from BGR
    torch.manual_seed(0)
    model = HIDiff(tiny_config()).eval()
    engines = torch_engines(model, "cpu")
    noise = torch.randn(model.prior_shape, generator=torch.Generator().manual_seed(0))
    whole = Pipeline(engines, noise, 8, backend="torch").run(blur).clamp(0, 1)
    tiled = Pipeline(engines, noise, 8, backend="torch", tiling=Tiling(tile=80, overlap=16))
    assert tiled.describe_tiling() == "always, 80 x 80 tiles, overlap 16"
    diff = (tiled.run(blur).clamp(0, 1) - whole).abs()
    psnr = 10 * torch.log10(1 / diff.square().mean()).item()
    assert diff.max() < 0.02 and psnr > 50, (diff.max(), psnr)
