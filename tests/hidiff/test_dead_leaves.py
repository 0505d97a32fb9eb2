"""hidiff.data.dead_leaves: power-law leaf sizes, natural-image spectra, flat palette colours with
anti-aliased edges, and a result that is a function of the generator."""
from __future__ import annotations

import numpy as np
import pytest

from hidiff.data.dead_leaves import dead_leaves, leaf_radii, mean_leaf_area, photo_palette


def _grey_palette() -> np.ndarray:
    return np.array([[0, 0, 0], [255, 255, 255]], np.uint8)


def _spectrum_slope(image: np.ndarray) -> float:
    """Slope of log power against log frequency, radially averaged, of a square image's luminance."""
    grey = image.astype(np.float64).mean(axis=2)
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2
    size = grey.shape[0]
    y, x = np.indices(power.shape)
    radius = np.hypot(y - size // 2, x - size // 2).astype(int)
    profile = np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel())
    freqs = np.arange(4, size // 4)
    return float(np.polyfit(np.log(freqs), np.log(profile[freqs]), 1)[0])


def test_leaf_radii_follow_the_power_law() -> None:
    r_min, r_max, alpha = 1.5, 100.0, 2.9
    radii = leaf_radii(400_000, np.random.default_rng(0), r_min, r_max, alpha)
    assert radii.min() >= r_min and radii.max() <= r_max
    grid = np.linspace(r_min, r_max, 200_001)
    density = grid**-alpha / np.trapezoid(grid**-alpha, grid)
    integrated_area = np.trapezoid(np.pi * grid**2 * density, grid)
    assert mean_leaf_area(r_min, r_max, alpha) == pytest.approx(integrated_area, rel=1e-4)
    assert np.mean(np.pi * radii**2) == pytest.approx(integrated_area, rel=0.03)
    # Half of the leaves are smaller than the density's median, found by integration.
    cdf = np.cumsum(density) * (grid[1] - grid[0])
    assert np.median(radii) == pytest.approx(grid[np.searchsorted(cdf, 0.5)], rel=0.02)


def test_dead_leaves_is_a_function_of_the_generator() -> None:
    palette = np.random.default_rng(0).integers(0, 256, (64, 3), dtype=np.uint8)
    first = dead_leaves((40, 56), np.random.default_rng(7), palette)
    assert first.shape == (40, 56, 3) and first.dtype == np.uint8
    assert np.array_equal(first, dead_leaves((40, 56), np.random.default_rng(7), palette))
    assert not np.array_equal(first, dead_leaves((40, 56), np.random.default_rng(8), palette))


def test_leaves_are_flat_palette_colours_with_antialiased_edges() -> None:
    image = dead_leaves((128, 128), np.random.default_rng(3), _grey_palette())
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    grey = image[..., 0]
    flat = np.isin(grey, (0, 255)).mean()
    assert 0.6 < flat < 0.99  # mostly leaf interiors; the rest is edge pixels blended by anti-aliasing
    assert 0.2 < (grey == 255).mean() < 0.8


def test_dead_leaves_have_the_spectrum_of_natural_images() -> None:
    # Natural images' power falls about as 1/f^2 (slope -2); white noise is flat (slope 0).
    palette = np.random.default_rng(1).integers(0, 256, (256, 3), dtype=np.uint8)
    slopes = [_spectrum_slope(dead_leaves((256, 256), np.random.default_rng(seed), palette)) for seed in range(3)]
    assert all(-2.8 < slope < -1.7 for slope in slopes), slopes
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3))
    assert abs(_spectrum_slope(noise)) < 0.3


def test_photo_palette_draws_pixels_of_every_photo() -> None:
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    blue = np.zeros((4, 6, 3), np.uint8)
    blue[..., 2] = 90
    palette = photo_palette([red, blue], np.random.default_rng(0), per_photo=5)
    assert palette.shape == (10, 3)
    assert {tuple(c) for c in palette.tolist()} == {(200, 0, 0), (0, 0, 90)}
    with pytest.raises(ValueError, match="at least one photo"):
        photo_palette([], np.random.default_rng(0))


@pytest.mark.parametrize("size, palette, radii, match", [
    ((0, 8), _grey_palette(), {}, "size must be positive"),
    ((8, 8), np.zeros((0, 3), np.uint8), {}, "non-empty"),
    ((8, 8), _grey_palette(), {"r_min": 5.0, "r_max": 2.0}, "r_min <= r_max"),
])
def test_bad_arguments_are_refused(size: tuple[int, int], palette: np.ndarray, radii: dict[str, float],
                                   match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dead_leaves(size, np.random.default_rng(0), palette, **radii)
