"""PSNR/SSIM conventions of the paper: agreement with scikit-image where the conventions are the
same, a brute-force reference for MATLAB's 3-D SSIM, and recovery of a known RealBlur misalignment."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from hidiff import metrics

skimage_metrics = pytest.importorskip("skimage.metrics")
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def photo_pair() -> tuple[np.ndarray, np.ndarray]:
    """A natural image and a blurred, noisy version of it (uint8 RGB, 96 x 120)."""
    target = skimage_data.astronaut()[40:136, 180:300].copy()
    rng = np.random.default_rng(0)
    degraded = cv2.GaussianBlur(target, (0, 0), 1.2).astype(np.int16) + rng.integers(-12, 13, target.shape)
    return np.clip(degraded, 0, 255).astype(np.uint8), target


def test_psnr_matches_skimage(photo_pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, target = photo_pair
    expected = skimage_metrics.peak_signal_noise_ratio(target, pred, data_range=255)
    assert metrics.psnr(pred, target) == pytest.approx(expected, abs=1e-9)


def test_psnr_known_value_and_identity() -> None:
    target = np.full((8, 9, 3), 100, dtype=np.uint8)
    pred = target + np.uint8(1)  # MSE exactly 1 -> 20 log10(255)
    assert metrics.psnr(pred, target) == pytest.approx(20 * math.log10(255), abs=1e-12)
    assert metrics.psnr(target, target) == math.inf


def test_per_channel_ssim_matches_skimage(photo_pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, target = photo_pair
    expected = skimage_metrics.structural_similarity(
        target, pred, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert metrics.ssim(pred, target, mode="per_channel") == pytest.approx(expected, abs=1e-9)


def _brute_force_matlab_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB ssim on an (H, W, D) uint8 volume with plain loops: a full 11 x 11 x 11 Gaussian
    window (sigma 1.5) and 'replicate' padding (indices clamped to the volume) on every axis."""
    sigma, radius = 1.5, 5
    offsets = range(-radius, radius + 1)
    x, y = a.astype(np.float64), b.astype(np.float64)
    height, width, depth = x.shape
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    norm = sum(
        math.exp(-(i * i + j * j + k * k) / (2 * sigma * sigma)) for i in offsets for j in offsets for k in offsets
    )
    total = 0.0
    for r in range(height):
        for c in range(width):
            for d in range(depth):
                mx = my = mxx = myy = mxy = 0.0
                for i in offsets:
                    rr = min(max(r + i, 0), height - 1)
                    for j in offsets:
                        cc = min(max(c + j, 0), width - 1)
                        for k in offsets:
                            dd = min(max(d + k, 0), depth - 1)
                            w = math.exp(-(i * i + j * j + k * k) / (2 * sigma * sigma)) / norm
                            xv, yv = x[rr, cc, dd], y[rr, cc, dd]
                            mx += w * xv
                            my += w * yv
                            mxx += w * xv * xv
                            myy += w * yv * yv
                            mxy += w * xv * yv
                vx, vy, cov = mxx - mx * mx, myy - my * my, mxy - mx * my
                total += ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return total / (height * width * depth)


def test_matlab_ssim_matches_brute_force_3d_window() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    b = np.clip(a.astype(np.int16) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    assert metrics.ssim(b, a, mode="matlab") == pytest.approx(_brute_force_matlab_ssim(b, a), abs=1e-12)


def test_matlab_ssim_identity_and_symmetry(photo_pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, target = photo_pair
    assert metrics.ssim(target, target) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(pred, target) == pytest.approx(metrics.ssim(target, pred), abs=1e-12)
    assert 0.0 < metrics.ssim(pred, target) < 1.0


def test_matlab_ssim_differs_from_per_channel(photo_pair: tuple[np.ndarray, np.ndarray]) -> None:
    # The colour axis inside MATLAB's window is why Python per-channel SSIM does not match the paper.
    pred, target = photo_pair
    assert abs(metrics.ssim(pred, target, "matlab") - metrics.ssim(pred, target, "per_channel")) > 1e-3


def test_matlab_ssim_grayscale_is_2d_ssim_with_replicate_border() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    b = np.clip(a.astype(np.int16) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    # A depth-1 volume under 'replicate' padding is the 2-D case.
    expected = _brute_force_matlab_ssim(b[:, :, None], a[:, :, None])
    assert metrics.ssim(b, a) == pytest.approx(expected, abs=1e-12)


def test_metrics_refuse_float_and_mismatched_inputs() -> None:
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        metrics.psnr(image.astype(np.float32), image)
    with pytest.raises(ValueError, match="shape"):
        metrics.ssim(image, image[:8])
    with pytest.raises(ValueError, match="unknown ssim mode"):
        metrics.ssim(image, image, mode="gray")


def test_to_uint8_clamps_and_rounds() -> None:
    image = np.array([[-0.5, 0.0, 0.5 / 255, 1.5 / 255, 1.0, 2.0]], dtype=np.float32)
    assert metrics.to_uint8(image).tolist() == [[0, 0, 0, 2, 255, 255]]


def _misaligned_pair(gain: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred, target, H): pred(x) = gain * target(H x), a small known homography."""
    target = cv2.GaussianBlur(skimage_data.astronaut()[100:292, 150:342], (0, 0), 1.5)
    homography = np.array([[1.0, 0.004, 0.8], [-0.003, 1.0, -0.6], [1e-5, 0.0, 1.0]], dtype=np.float32)
    warped = cv2.warpPerspective(
        target.astype(np.float32),
        homography,
        (target.shape[1], target.shape[0]),
        flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    pred = np.clip(np.round(warped * gain), 0, 255).astype(np.uint8)
    return pred, target, homography


def test_realblur_alignment_recovers_gain_and_homography() -> None:
    gain = 0.85
    pred, target, homography = _misaligned_pair(gain)
    aligned = metrics.realblur_alignment(pred, target)

    assert aligned.gain == pytest.approx(1 / gain, rel=0.01)
    # aligned(x) = pred(W x) = target(H W x): H W must be the identity up to a fraction of a pixel.
    composed = homography.astype(np.float64) @ aligned.homography
    corners = np.array([[0, 0, 1], [191, 0, 1], [0, 191, 1], [191, 191, 1]], dtype=np.float64).T
    moved = composed @ corners
    assert np.abs(moved[:2] / moved[2] - corners[:2]).max() < 0.25

    aligned_psnr = metrics.psnr_realblur(aligned.pred, aligned.target, aligned.mask)
    assert aligned_psnr > metrics.psnr(pred, target) + 15
    assert aligned_psnr > 40
    assert metrics.ssim_realblur(aligned.pred, aligned.target, aligned.mask) > 0.98
    # The mask marks where the warp is defined: almost everything for a sub-pixel-ish warp.
    assert set(np.unique(aligned.mask).tolist()) <= {0.0, 1.0}
    assert aligned.mask.mean() > 0.95


def test_align_realblur_returns_arrays_and_identity_scores_perfectly() -> None:
    target = cv2.GaussianBlur(skimage_data.astronaut()[:96, :96], (0, 0), 1.0)
    aligned_pred, aligned_target, mask = metrics.align_realblur(target, target)
    assert aligned_pred.shape == aligned_target.shape == mask.shape == (96, 96, 3)
    assert aligned_pred.dtype == np.float32
    psnr_value, ssim_value = metrics.realblur_scores(target, target)
    assert psnr_value > 60  # cubic resampling at the identity warp leaves only rounding differences
    assert ssim_value == pytest.approx(1.0, abs=1e-4)
