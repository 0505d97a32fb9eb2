"""Dead-leaves images: sharp synthetic content with the edge statistics of natural photographs.

Matheron's dead-leaves model drops opaque shapes ("leaves") of random position, colour and
size until they cover the plane; with a power-law size density p(r) ~ r^-alpha, alpha near 3, the
result is scale-invariant and full of occlusion edges at every orientation and contrast, as
natural images are (Lee, Mumford and Huang, IJCV 2001). Restoration networks trained on such
images alone come within about a dB of those trained on photographs (Achddou, Gousseau and
Ladjal, "Synthetic images as a regularity prior for image restoration neural networks", SSVM
2021). The demonstration model mixes them into its 12 training photos because it learns those
photos rather than deblurring: the shipped run-9 model gains 5.8 dB on blurred copies of its
training photos and 2.8 dB on the held-out one (docs/default-model.md).

Leaves are discs and rotated rectangles drawn anti-aliased (OpenCV, sub-pixel positions) on top
of one another until they cover the image ``coverage`` times over on average, so about
exp(-coverage) of the background stays bare. Colours are drawn from a palette, in practice
pixels of the training photos, so the colour statistics stay those of photographs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

SHIFT_BITS = 4  # OpenCV's fixed-point fraction: positions and radii in 1/16 pixel
RECTANGLE_SHARE = 0.5  # the share of leaves that are rotated rectangles rather than discs


def leaf_radii(count: int, rng: np.random.Generator, r_min: float, r_max: float, alpha: float) -> np.ndarray:
    """``count`` radii from p(r) ~ r^-alpha on [r_min, r_max] (inverse-CDF sampling, alpha != 1)."""
    a = 1.0 - alpha
    u = rng.random(count)
    return (r_min**a + u * (r_max**a - r_min**a)) ** (1.0 / a)


def mean_leaf_area(r_min: float, r_max: float, alpha: float) -> float:
    """E[pi r^2] under p(r) ~ r^-alpha on [r_min, r_max] (alpha != 1, 3): how many leaves cover an area."""
    norm = (1.0 - alpha) / (r_max ** (1.0 - alpha) - r_min ** (1.0 - alpha))
    second_moment = norm * (r_max ** (3.0 - alpha) - r_min ** (3.0 - alpha)) / (3.0 - alpha)
    return math.pi * second_moment


def dead_leaves(size: tuple[int, int], rng: np.random.Generator, palette: np.ndarray, *,
                r_min: float = 1.5, r_max: float | None = None, alpha: float = 2.9,
                coverage: float = 3.0) -> np.ndarray:
    """A (H, W, 3) uint8 dead-leaves image of ``size`` (height, width).

    palette: (N, 3) uint8 colours the leaves are painted with (e.g. :func:`photo_palette`).
    r_min, r_max: leaf radius range in pixels (r_max defaults to half the longer side);
    alpha: the power of the size density (3 is exactly scale-invariant; 2.9 keeps the mean area
    finite in closed form); coverage: mean number of leaves over each pixel.
    """
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"dead_leaves size must be positive, got {size}")
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(palette) == 0:
        raise ValueError("dead_leaves needs a non-empty (N, 3) palette")
    r_max = r_max if r_max is not None else max(height, width) / 2
    if not 0 < r_min <= r_max:
        raise ValueError(f"dead_leaves radii must satisfy 0 < r_min <= r_max, got {r_min}, {r_max}")
    count = math.ceil(coverage * height * width / mean_leaf_area(r_min, r_max, alpha))

    image = np.empty((height, width, 3), np.uint8)
    image[:] = palette[rng.integers(len(palette))]
    radii = leaf_radii(count, rng, r_min, r_max, alpha)
    # Centres may fall a radius outside the image so its borders are covered as densely as its middle.
    centres = rng.random((count, 2)) * (np.array([width, height]) + 2 * radii[:, None]) - radii[:, None]
    colours = palette[rng.integers(len(palette), size=count)].tolist()
    is_rectangle = rng.random(count) < RECTANGLE_SHARE
    aspects = rng.uniform(0.2, 1.0, count)
    angles = rng.uniform(0.0, 180.0, count)
    scale = 1 << SHIFT_BITS
    for i in range(count):
        colour = colours[i]
        if is_rectangle[i]:
            # A rectangle of the same area as the disc of radius r, elongated by aspect.
            side = radii[i] * math.sqrt(math.pi / aspects[i])
            box = ((float(centres[i, 0]), float(centres[i, 1])), (side, side * aspects[i]), float(angles[i]))
            corners = np.round(cv2.boxPoints(box) * scale).astype(np.int32)
            cv2.fillConvexPoly(image, corners, colour, cv2.LINE_AA, SHIFT_BITS)
        else:
            centre = (int(round(centres[i, 0] * scale)), int(round(centres[i, 1] * scale)))
            cv2.circle(image, centre, int(round(radii[i] * scale)), colour, -1, cv2.LINE_AA, SHIFT_BITS)
    return image


def photo_palette(photos: Sequence[np.ndarray], rng: np.random.Generator, per_photo: int = 4096) -> np.ndarray:
    """(N, 3) uint8: ``per_photo`` random pixels of each (H, W, 3) uint8 photo."""
    if not photos:
        raise ValueError("photo_palette needs at least one photo")
    picks = []
    for photo in photos:
        pixels = photo.reshape(-1, 3)
        picks.append(pixels[rng.integers(len(pixels), size=per_photo)])
    return np.concatenate(picks)
