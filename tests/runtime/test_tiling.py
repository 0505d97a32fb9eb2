"""Tiles cover the frame, blend exactly, and stay close to the untiled output."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from runtime_helpers import deblurrer_fixture, model_fixture  # noqa: F401 (fixtures)
from skimage import data

from runtime import Deblurrer
from runtime.tiling import check_tile_size, plan_tiles, run_tiled, tile_weight


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


def test_tiled_output_stays_close_to_untiled_on_a_natural_image(model, deblurrer):
    # skimage's astronaut, area-downscaled to 128 x 128 so the test stays fast; 80 x 80 tiles
    # overlapping by 16 (the last tile flush with the edge, so 4 tiles overlapping by 32).
    # Measured with the tiny random model of tests/conftest.py on the CPU (float32):
    # max |diff| 0.0125, mean 0.0014, PSNR 53.8 dB. The bounds leave room for BLAS rounding.
    # At full size (512 x 512, tile 256, overlap 32) the same model gives max 0.027, PSNR 47.7 dB;
    # with overlap 0 (hard seams) max 0.33: the blending is what keeps seams invisible.
    image = cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    whole = deblurrer.deblur(image)
    with Deblurrer(model=model, device="cpu", tile=80, tile_overlap=16) as tiled:
        assert "always, 80 x 80 tiles" in tiled.describe()
        pieces = tiled.deblur(image)
    diff = np.abs(pieces - whole)
    psnr = 10 * np.log10(1 / np.mean(diff**2))
    assert diff.max() < 0.02 and psnr > 50, (diff.max(), psnr)


def test_max_pixels_tiles_only_large_frames(model, deblurrer):
    frame = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    with Deblurrer(model=model, device="cpu", max_pixels=32 * 32, tile_overlap=8) as budget:
        small = np.ascontiguousarray(frame[:32, :32])
        np.testing.assert_array_equal(budget.deblur(small), deblurrer.deblur(small))  # within budget: whole
        assert budget._plan(40, 48) is not None
        assert budget.deblur(frame).shape == frame.shape
