"""PSNR and SSIM as the paper scored them, on 8-bit RGB images.

Two official paths produced the paper's numbers (zhengchen1999/HI-Diff):

- GoPro / HIDE: ``evaluate_gopro_hide.m`` calls MATLAB ``psnr`` and ``ssim`` on the saved uint8 PNGs.
  MATLAB's ``ssim`` treats an H x W x 3 image as ONE 3-D volume: its local statistics come from a
  3-D Gaussian window (sigma 1.5, 11 taps per axis, 'replicate' padding) that also reaches across the
  three colour channels. :func:`ssim` with ``mode="matlab"`` reproduces that.
  ``mode="per_channel"`` is the BasicSR / scikit-image convention (2-D SSIM per channel over the
  'valid' region of an 11 x 11 window, averaged over channels); it gives different numbers and is
  labelled as such wherever it is reported.
- RealBlur: ``evaluate_realblur.py`` first rescales the prediction's intensity and aligns it to the
  target with an ECC homography, then scores only the pixels the warp covers
  (:func:`realblur_alignment`, :func:`psnr_realblur`, :func:`ssim_realblur`).

Images are ``(H, W, 3) uint8`` RGB unless a function says otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# SSIM constants of Wang et al. (2004), used by MATLAB, BasicSR and scikit-image alike.
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5
UINT8_PEAK = 255.0

# evaluate_realblur.py's ECC settings.
REALBLUR_ECC_ITERATIONS = 100
REALBLUR_ECC_EPS = 0.0
REALBLUR_ECC_GAUSS_FILTER = 5


def _check_pair(pred: np.ndarray, target: np.ndarray, *, what: str) -> None:
    """Refuse anything but two equally shaped uint8 images (the paper scores saved 8-bit PNGs)."""
    for label, image in (("prediction", pred), ("target", target)):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"{what}: {label} must be a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise ValueError(
                f"{what}: {label} has dtype {image.dtype}, expected uint8 (8-bit image as saved to PNG); "
                "convert float outputs with hidiff.metrics.to_uint8"
            )
        if image.ndim not in (2, 3):
            raise ValueError(f"{what}: {label} has shape {image.shape}, expected (H, W) or (H, W, C)")
    if pred.shape != target.shape:
        raise ValueError(f"{what}: prediction shape {pred.shape} differs from target shape {target.shape}")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (any shape) -> uint8, as BasicSR's ``tensor2img`` saves results.

    Clamp to [0, 1], scale by 255 and round half to even (numpy's rounding, as BasicSR uses).
    """
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"to_uint8 expects a float image in [0, 1], got dtype {image.dtype}")
    return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------------------------


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """MATLAB ``psnr(A, ref)`` on uint8: peak 255, MSE over every pixel and channel, in dB.

    pred, target: (H, W, 3) or (H, W) uint8. Identical images give ``inf`` (as MATLAB does).
    """
    _check_pair(pred, target, what="psnr")
    diff = pred.astype(np.float64) - target.astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(UINT8_PEAK**2 / mse)


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------


def gaussian_taps(sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian of MATLAB ``ssim``: radius ceil(3 * sigma), i.e. 11 taps for 1.5.

    scikit-image (truncate 3.5 -> radius int(3.5 * 1.5 + 0.5) = 5) and BasicSR
    (``cv2.getGaussianKernel(11, 1.5)``) use the same 11 taps for sigma 1.5.
    """
    radius = math.ceil(3 * sigma)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return taps / taps.sum()


def _replicate_mixing_matrix(depth: int, taps: np.ndarray) -> np.ndarray:
    """(depth, depth) matrix M with out[..., c] = sum_j M[c, j] * in[..., j] for a 1-D
    convolution along an axis of length ``depth`` with 'replicate' padding.

    Along the colour axis (depth 3) an 11-tap window reaches 5 samples past each end; replicate
    padding repeats the edge channel there, which folds the outer taps onto the first and last
    channel. Written as a small matrix this is exact and costs one tensordot.
    """
    radius = len(taps) // 2
    mixing = np.zeros((depth, depth), dtype=np.float64)
    for c in range(depth):
        for k, weight in enumerate(taps):
            mixing[c, min(max(c + k - radius, 0), depth - 1)] += weight
    return mixing


def _gaussian_filter_volume(volume: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """3-D Gaussian filter of an (H, W, D) float64 volume with 'replicate' padding on every axis,
    as MATLAB ``imfilter(..., 'conv', 'replicate')`` with the separable 3-D Gaussian.
    """
    depth = volume.shape[2]
    planes = [
        cv2.sepFilter2D(np.ascontiguousarray(volume[:, :, d]), cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REPLICATE)
        for d in range(depth)
    ]
    filtered_hw = np.stack(planes, axis=2)
    mixing = _replicate_mixing_matrix(depth, taps)
    return np.tensordot(filtered_hw, mixing, axes=([2], [1]))


def _ssim_map(
    mu_x: np.ndarray,
    mu_y: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
    xy: np.ndarray,
    data_range: float,
    clamp_variances: bool,
) -> np.ndarray:
    """Eq. (13) of Wang et al. from filtered moments E[x], E[y], E[x^2], E[y^2], E[xy]."""
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    if clamp_variances:
        # MATLAB (R2021a and later) clamps these at zero: rounding can make them slightly negative.
        var_x = np.maximum(var_x, 0.0)
        var_y = np.maximum(var_y, 0.0)
    cov_xy = xy - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return numerator / denominator


def ssim_matlab_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """SSIM map of MATLAB ``ssim(A, ref)`` for uint8 A, ref; same shape as the input, float64.

    (H, W, 3) is one volume: E[.] is a 3-D Gaussian average (sigma 1.5, 11 x 11 x 11, 'replicate'
    padding on all three axes, so the colour axis is averaged too). (H, W) is the 2-D case.
    L = 255, C1 = (0.01 L)^2, C2 = (0.03 L)^2; the whole map, borders included, is kept.
    """
    _check_pair(pred, target, what="ssim")
    x = pred.astype(np.float64)
    y = target.astype(np.float64)
    squeeze = x.ndim == 2
    if squeeze:
        x, y = x[:, :, None], y[:, :, None]
    taps = gaussian_taps()
    moments = [_gaussian_filter_volume(v, taps) for v in (x, y, x * x, y * y, x * y)]
    if squeeze:
        # A 2-D input is filtered in 2-D only: a depth-1 'replicate' axis is the identity anyway.
        moments = [m[:, :, 0] for m in moments]
    mu_x, mu_y, xx, yy, xy = moments
    return _ssim_map(mu_x, mu_y, xx, yy, xy, data_range=UINT8_PEAK, clamp_variances=True)


def ssim_per_channel(pred: np.ndarray, target: np.ndarray) -> float:
    """BasicSR / scikit-image SSIM: 2-D SSIM of each channel, averaged over channels.

    Equals ``skimage.metrics.structural_similarity(channel_axis=2, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255)``: an 11 x 11 Gaussian window and the
    mean over the region where the window fits inside the image (5 pixels cropped per side).
    pred, target: (H, W, C) uint8 with H, W >= 11.
    """
    _check_pair(pred, target, what="ssim")
    if pred.ndim != 3:
        raise ValueError(f"per-channel ssim expects (H, W, C), got shape {pred.shape}")
    taps = gaussian_taps()
    radius = len(taps) // 2
    if min(pred.shape[:2]) < len(taps):
        raise ValueError(f"per-channel ssim needs H, W >= {len(taps)}, got {pred.shape[:2]}")
    scores = []
    for c in range(pred.shape[2]):
        x = pred[:, :, c].astype(np.float64)
        y = target[:, :, c].astype(np.float64)
        # The border mode never reaches the cropped region; REFLECT is what scikit-image uses.
        mu_x, mu_y, xx, yy, xy = (
            cv2.sepFilter2D(v, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REFLECT)
            for v in (x, y, x * x, y * y, x * y)
        )
        ssim_map = _ssim_map(mu_x, mu_y, xx, yy, xy, data_range=UINT8_PEAK, clamp_variances=False)
        scores.append(float(ssim_map[radius:-radius, radius:-radius].mean()))
    return float(np.mean(scores))


def ssim(pred: np.ndarray, target: np.ndarray, mode: str = "matlab") -> float:
    """SSIM of a uint8 prediction against its target.

    mode="matlab": MATLAB ``ssim`` (the paper's GoPro/HIDE numbers): (H, W, 3) scored as one
    3-D volume, mean of the full SSIM map.
    mode="per_channel": BasicSR / scikit-image per-channel 2-D SSIM (not comparable to the paper).
    """
    if mode == "matlab":
        return float(ssim_matlab_map(pred, target).mean())
    if mode == "per_channel":
        return ssim_per_channel(pred, target)
    raise ValueError(f"unknown ssim mode {mode!r}; expected 'matlab' or 'per_channel'")


# --------------------------------------------------------------------------------------------
# RealBlur protocol (evaluate_realblur.py)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealBlurAlignment:
    """The prediction aligned to its target as ``evaluate_realblur.py`` does it.

    pred, target, mask: (H, W, 3) float32; pred and target are in [0, 1] (pred may exceed 1 after
    the gain) and already multiplied by the mask; mask is 1 where the warped prediction is
    defined and 0 outside it.
    gain: the least-squares intensity scale applied to the prediction.
    homography: (3, 3) float32 from ECC, mapping target pixel coordinates to prediction
    coordinates (it is applied with WARP_INVERSE_MAP).
    """

    pred: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    gain: float
    homography: np.ndarray


def realblur_alignment(pred: np.ndarray, target: np.ndarray) -> RealBlurAlignment:
    """Intensity-match and ECC-align a prediction to its target (evaluate_realblur.py's image_align).

    pred, target: (H, W, 3) uint8 RGB. Steps (all float32, as the script runs them):
    1. scale the prediction by the least-squares gain sum(target * pred) / sum(pred^2);
    2. estimate a homography with ``cv2.findTransformECC`` on the grayscale images
       (MOTION_HOMOGRAPHY, 100 iterations, eps 0, gaussFiltSize 5);
    3. warp the scaled prediction (cubic, WARP_INVERSE_MAP, reflect border) and a ones-mask
       (nearest, constant 0 border), and multiply both images by the mask.
    """
    _check_pair(pred, target, what="realblur alignment")
    if pred.ndim != 3 or pred.shape[2] != 3:
        raise ValueError(f"realblur alignment expects (H, W, 3) RGB images, got shape {pred.shape}")
    z = pred.astype(np.float32) / 255.0
    x = target.astype(np.float32) / 255.0

    denominator = np.sum(z * z)
    if denominator == 0:
        raise ValueError("realblur alignment: the prediction is all black, its intensity gain is undefined")
    gain = np.sum(x * z) / denominator
    zs = (gain * z).astype(np.float32)

    warp = np.eye(3, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, REALBLUR_ECC_ITERATIONS, REALBLUR_ECC_EPS)
    try:
        # No mask, as the script; OpenCV's stubs do not admit None next to gaussFiltSize.
        _, warp = cv2.findTransformECC(  # type: ignore[call-overload]
            cv2.cvtColor(x, cv2.COLOR_RGB2GRAY),
            cv2.cvtColor(zs, cv2.COLOR_RGB2GRAY),
            warp,
            cv2.MOTION_HOMOGRAPHY,
            criteria,
            None,
            REALBLUR_ECC_GAUSS_FILTER,
        )
    except cv2.error as exc:
        raise ValueError(
            "realblur alignment: ECC found no homography between prediction and target "
            f"(are they the same scene?): {str(exc).strip().splitlines()[-1]}"
        ) from exc

    height, width = x.shape[:2]
    warped = cv2.warpPerspective(
        zs, warp, (width, height), flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    )
    mask = cv2.warpPerspective(
        np.ones_like(zs, dtype=np.float32),
        warp,
        (width, height),
        flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return RealBlurAlignment(
        pred=warped * mask, target=x * mask, mask=mask, gain=float(gain), homography=np.asarray(warp, dtype=np.float32)
    )


def align_realblur(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(aligned_pred, aligned_target, mask), each (H, W, 3) float32; see :func:`realblur_alignment`."""
    aligned = realblur_alignment(pred, target)
    return aligned.pred, aligned.target, aligned.mask


def psnr_realblur(aligned_pred: np.ndarray, aligned_target: np.ndarray, mask: np.ndarray) -> float:
    """PSNR over the valid pixels only: squared error summed over channels / sum of the mask,
    peak 1 (evaluate_realblur.py's compute_psnr). Inputs are the outputs of :func:`align_realblur`.
    """
    err = np.sum((aligned_target - aligned_pred) ** 2, dtype=np.float64) / np.sum(mask)
    if err == 0.0:
        return math.inf
    return float(10.0 * np.log10(1.0 / err))


def ssim_realblur(aligned_pred: np.ndarray, aligned_target: np.ndarray, mask: np.ndarray) -> float:
    """SSIM as evaluate_realblur.py's compute_ssim: scikit-image's full SSIM map (per channel,
    Gaussian window, data range 1), masked, 5-pixel border cropped, normalised per channel by the
    mask, averaged over channels. Needs scikit-image (the ``eval`` extra).
    """
    try:
        from skimage.metrics import structural_similarity
    except ImportError as exc:
        raise ImportError("the RealBlur SSIM needs scikit-image: pip install 'hidiff-deploy[eval]'") from exc
    _, ssim_map = structural_similarity(
        aligned_target,
        aligned_pred,
        channel_axis=2,
        gaussian_weights=True,
        use_sample_covariance=False,
        data_range=1.0,
        full=True,
    )
    ssim_map = ssim_map * mask
    # The script crops the radius of scipy.ndimage's Gaussian (truncate 3.5, sigma 1.5).
    pad = int(3.5 * SSIM_SIGMA + 0.5)
    per_channel = ssim_map[pad:-pad, pad:-pad, :].sum(axis=(0, 1)) / mask[pad:-pad, pad:-pad, :].sum(axis=(0, 1))
    return float(np.mean(per_channel))


def realblur_scores(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of one uint8 RGB pair under the RealBlur protocol."""
    aligned = realblur_alignment(pred, target)
    return (
        psnr_realblur(aligned.pred, aligned.target, aligned.mask),
        ssim_realblur(aligned.pred, aligned.target, aligned.mask),
    )
