"""Synthetic blurry/sharp training pairs from sharp photographs.

For users who have sharp images but no paired blur data, and for the project's own tests and
demos. Each pair is made in four steps, every random choice drawn from one numpy Generator so the
same seed gives the same pair:

1. a motion-blur kernel (:func:`sample_kernel`): by default camera shake, a random walk with
   inertia (the camera's velocity drifts under random accelerations); or ``"line"``, a straight
   motion at a random angle. Centred and scaled into a size x size box (odd sizes 7..31),
   rasterised with bilinear weights and normalised to sum 1;
2. convolution with that kernel (``cv2.filter2D``, reflect border);
3. sensor noise: Gaussian read noise plus signal-dependent ("Poisson-ish") shot noise,
   variance = noise_sigma^2 + shot_noise * intensity, in [0, 1] units;
4. optionally JPEG compression (``cv2.imencode``, quality 60..95), then 8-bit quantisation.

:func:`make_pairs` writes ``OUT/input/NAME.png`` (blurry) and ``OUT/target/NAME.png`` (sharp), the
layout :class:`hidiff.data.paired.PairedFolder` reads, plus ``OUT/pairs.json`` with every pair's
parameters. ``python -m hidiff.data.synthetic_blur OUT --per-image N --holdout NAMES`` makes
``OUT/train`` and ``OUT/test`` splits, the held-out photos going only to test.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hidiff.data.paired import ImagePair, list_images, read_rgb
from hidiff.files import write_atomic

MIN_KERNEL_SIZE = 7
MAX_KERNEL_SIZE = 31
KERNEL_SHAPES = ("shake", "line")  # random-walk camera shake; straight linear motion


@dataclass(frozen=True)
class BlurRecipe:
    """Ranges the degradations are drawn from (uniformly, bounds included)."""

    kernel_sizes: tuple[int, int] = (MIN_KERNEL_SIZE, MAX_KERNEL_SIZE)  # odd sizes only
    noise_sigma: tuple[float, float] = (0.0, 0.01)  # read-noise std, [0, 1] units (0..2.5 grey levels)
    shot_noise: tuple[float, float] = (0.0, 0.001)  # shot-noise variance per unit intensity
    jpeg_probability: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 95)
    kernel_shape: str = "shake"  # one of KERNEL_SHAPES

    def __post_init__(self) -> None:
        if self.kernel_shape not in KERNEL_SHAPES:
            raise ValueError(f"kernel_shape must be one of {', '.join(KERNEL_SHAPES)}, got {self.kernel_shape!r}")
        low, high = self.kernel_sizes
        if not 3 <= low <= high:
            raise ValueError(f"kernel_sizes must satisfy 3 <= low <= high, got {self.kernel_sizes}")
        if not 0.0 <= self.jpeg_probability <= 1.0:
            raise ValueError(f"jpeg_probability must be in [0, 1], got {self.jpeg_probability}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality must be within 1..100 and ordered, got {self.jpeg_quality}")


@dataclass(frozen=True)
class Degradation:
    """What was done to one image (stored in pairs.json)."""

    kernel_size: int
    kernel_shape: str
    noise_sigma: float
    shot_noise: float
    jpeg_quality: int | None


# --------------------------------------------------------------------------------------------
# Kernel and degradation
# --------------------------------------------------------------------------------------------


def sample_kernel(rng: np.random.Generator, size: int, shape: str = "shake") -> np.ndarray:
    """Random motion-blur kernel: (size, size) float32, non-negative, sum 1, odd ``size`` >= 3.

    shape "shake": a random walk with inertia, velocity v_t = 0.8 v_{t-1} + a_t with Gaussian
    accelerations a_t, position p_t = p_{t-1} + v_t. shape "line": a straight, uniform-speed
    motion at an angle drawn uniformly in [0, pi). Either path is centred on its mean (so the blur
    does not shift the image) and scaled to fill a random 40..100 % of the box.
    """
    if size < 3 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and >= 3, got {size}")
    if shape not in KERNEL_SHAPES:
        raise ValueError(f"kernel shape must be one of {', '.join(KERNEL_SHAPES)}, got {shape!r}")
    steps = 4 * size
    if shape == "line":
        angle = rng.uniform(0.0, np.pi)
        positions = np.linspace(-1.0, 1.0, steps)[:, None] * np.array([np.cos(angle), np.sin(angle)])
    else:
        velocity = rng.normal(size=2)
        positions = np.empty((steps, 2))
        position = np.zeros(2)
        for t in range(steps):
            velocity = 0.8 * velocity + rng.normal(size=2)
            position = position + velocity
            positions[t] = position
    positions -= positions.mean(axis=0)
    extent = np.abs(positions).max()
    half = (size - 1) / 2
    if extent > 0:
        positions *= rng.uniform(0.4, 1.0) * (half - 1) / extent
    positions += half

    # Bilinear splatting keeps the trajectory's mean exactly at the kernel centre.
    kernel = np.zeros((size, size), dtype=np.float64)
    for x, y in positions:
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                kernel[y0 + dy, x0 + dx] += wy * wx
    return (kernel / kernel.sum()).astype(np.float32)


def blur_image(
    img: np.ndarray,
    kernel: np.ndarray,
    rng: np.random.Generator,
    noise_sigma: float = 0.0,
    jpeg_quality: int | None = None,
    shot_noise: float = 0.0,
) -> np.ndarray:
    """Blur, add noise, optionally JPEG-compress: (H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB.

    kernel: (k, k) float, sum 1 (convolution, not correlation: the kernel is flipped for filter2D).
    noise_sigma: Gaussian read-noise std and shot_noise: variance per unit intensity, both in
    [0, 1] units. jpeg_quality: 1..100, or None for no compression.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"blur_image expects (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    sharp = img.astype(np.float32) / 255.0
    blurred = cv2.filter2D(sharp, -1, np.ascontiguousarray(kernel[::-1, ::-1]), borderType=cv2.BORDER_REFLECT)
    if noise_sigma > 0 or shot_noise > 0:
        std = np.sqrt(noise_sigma**2 + shot_noise * np.clip(blurred, 0.0, 1.0))
        blurred = blurred + rng.standard_normal(blurred.shape, dtype=np.float32) * std
    out: np.ndarray = (np.clip(blurred, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if jpeg_quality is not None:
        bgr = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise RuntimeError(f"OpenCV could not JPEG-encode a {out.shape} image")
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        if decoded is None:
            raise RuntimeError(f"OpenCV could not decode its own JPEG of a {out.shape} image")
        out = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return out


def sample_degradation(rng: np.random.Generator, recipe: BlurRecipe) -> tuple[np.ndarray, Degradation]:
    """Draw a kernel and noise/JPEG settings from ``recipe``."""
    low, high = recipe.kernel_sizes
    odd_sizes = [s for s in range(low, high + 1) if s % 2 == 1]
    if not odd_sizes:
        raise ValueError(f"kernel_sizes {recipe.kernel_sizes} contain no odd size")
    size = int(rng.choice(odd_sizes))
    kernel = sample_kernel(rng, size, recipe.kernel_shape)
    use_jpeg = rng.uniform() < recipe.jpeg_probability
    return kernel, Degradation(
        kernel_size=size,
        kernel_shape=recipe.kernel_shape,
        noise_sigma=float(rng.uniform(*recipe.noise_sigma)),
        shot_noise=float(rng.uniform(*recipe.shot_noise)),
        jpeg_quality=int(rng.integers(recipe.jpeg_quality[0], recipe.jpeg_quality[1] + 1)) if use_jpeg else None,
    )


def make_pair(
    sharp: np.ndarray,
    rng: np.random.Generator,
    recipe: BlurRecipe = BlurRecipe(),
    crop: int | None = None,
    name: str = "",
) -> tuple[np.ndarray, np.ndarray, Degradation]:
    """(blurry, sharp, degradation) from one (H, W, 3) uint8 RGB photo.

    With ``crop`` a random crop x crop window is cut; the blur is computed with the kernel's
    margin of real image around the window, so the window's borders see real content.
    """
    kernel, degradation = sample_degradation(rng, recipe)
    height, width = sharp.shape[:2]
    if crop is None:
        top, left, window_height, window_width = 0, 0, height, width
    else:
        if height < crop or width < crop:
            raise ValueError(f"image {name} is {width}x{height}, smaller than the crop {crop}x{crop}")
        top = int(rng.integers(0, height - crop + 1))
        left = int(rng.integers(0, width - crop + 1))
        window_height = window_width = crop
    margin = kernel.shape[0] // 2
    y0, x0 = max(top - margin, 0), max(left - margin, 0)
    y1, x1 = min(top + window_height + margin, height), min(left + window_width + margin, width)
    blurred = blur_image(
        sharp[y0:y1, x0:x1],
        kernel,
        rng,
        noise_sigma=degradation.noise_sigma,
        jpeg_quality=degradation.jpeg_quality,
        shot_noise=degradation.shot_noise,
    )
    blurred = blurred[top - y0 : top - y0 + window_height, left - x0 : left - x0 + window_width]
    return blurred, sharp[top : top + window_height, left : left + window_width], degradation


# --------------------------------------------------------------------------------------------
# Writing pairs
# --------------------------------------------------------------------------------------------


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Save (H, W, 3) uint8 RGB as PNG, atomically."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not PNG-encode image for {path}")
    write_atomic(Path(path), encoded.tobytes())


def _named_images(images: Iterable[tuple[str, np.ndarray]] | str | os.PathLike[str]) -> list[tuple[str, np.ndarray]]:
    if isinstance(images, (str, os.PathLike)):
        return [(stem, read_rgb(path)) for stem, path in list_images(images, label="sharp image").items()]
    named = list(images)
    if not named:
        raise ValueError("make_pairs got no images")
    return named


def make_pairs(
    images: Iterable[tuple[str, np.ndarray]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    per_image: int = 1,
    seed: int = 0,
    crop: int | None = None,
    recipe: BlurRecipe = BlurRecipe(),
    progress: bool = False,
) -> list[ImagePair]:
    """Write ``per_image`` blurry/sharp pairs per photo to ``out_dir/{input,target}/NAME_k.png``.

    images: a folder of sharp photos, or (name, (H, W, 3) uint8 RGB) tuples.
    Pair k of photo ``name`` is drawn from ``default_rng([seed, crc32(name), k])``: the same seed
    gives the same pairs, and adding photos does not change the others' pairs.
    Also writes ``out_dir/pairs.json`` (seed, recipe, each pair's degradation). Returns the pairs.
    """
    if per_image < 1:
        raise ValueError(f"per_image must be >= 1, got {per_image}")
    named = _named_images(images)
    names = [name for name, _ in named]
    if len(set(names)) != len(names):
        raise ValueError(f"make_pairs got duplicate image names: {sorted(n for n in set(names) if names.count(n) > 1)}")
    out = Path(out_dir)
    (out / "input").mkdir(parents=True, exist_ok=True)
    (out / "target").mkdir(parents=True, exist_ok=True)

    pairs: list[ImagePair] = []
    records = []
    jobs = [(name, image, k) for name, image in named for k in range(per_image)]
    for name, image, k in tqdm(jobs, desc="synthetic blur", unit="pair", disable=not progress):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8")), k])
        blurry, sharp, degradation = make_pair(image, rng, recipe, crop=crop, name=name)
        pair_name = f"{name}_{k:03d}"
        pair = ImagePair(pair_name, out / "input" / f"{pair_name}.png", out / "target" / f"{pair_name}.png")
        write_png(pair.blur, blurry)
        write_png(pair.sharp, sharp)
        pairs.append(pair)
        records.append({"name": pair_name, "source": name, **asdict(degradation)})
    manifest = {"seed": seed, "per_image": per_image, "crop": crop, "recipe": asdict(recipe), "pairs": records}
    write_atomic(out / "pairs.json", json.dumps(manifest, indent=2).encode("utf-8"))
    return pairs


# --------------------------------------------------------------------------------------------
# Sample photographs and CLI
# --------------------------------------------------------------------------------------------

# Colour photographs that scikit-image 0.26 ships inside its wheel (no download needed). Other
# colour entries of skimage.data are microscopy, astronomy, medical or synthetic images.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")


def skimage_sharp_images() -> list[tuple[str, np.ndarray]]:
    """The colour photographs bundled with scikit-image as (name, (H, W, 3) uint8 RGB).

    ``motorcycle`` is the left view of ``skimage.data.stereo_motorcycle()``.
    """
    try:
        from skimage import data
    except ImportError as exc:
        raise ImportError("the sample photographs come from scikit-image: pip install 'hidiff-deploy[eval]'") from exc
    loaders = {
        "astronaut": data.astronaut,
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
    }
    return [(name, np.ascontiguousarray(loaders[name]()[:, :, :3])) for name in SKIMAGE_PHOTOS]


def split_holdout(
    images: Sequence[tuple[str, np.ndarray]], holdout: Sequence[str]
) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """(train, test): photos named in ``holdout`` go to test only. Unknown names are an error."""
    available = [name for name, _ in images]
    unknown = sorted(set(holdout) - set(available))
    if unknown:
        raise ValueError(f"held-out image(s) {', '.join(unknown)} not among the images: {', '.join(available)}")
    train = [item for item in images if item[0] not in holdout]
    test = [item for item in images if item[0] in holdout]
    if not train:
        raise ValueError(f"holding out {', '.join(holdout)} leaves no image for training")
    if not test:
        raise ValueError("no image held out for the test split; name at least one with --holdout")
    return train, test


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hidiff.data.synthetic_blur",
        description="Make synthetic blurry/sharp pairs (OUT/train and OUT/test, each with input/ and target/).",
    )
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--per-image", type=int, default=4, help="pairs per photo (default 4)")
    parser.add_argument(
        "--holdout",
        nargs="+",
        default=["rocket"],
        help="photo names (space- or comma-separated) used only for the test split (default: rocket)",
    )
    parser.add_argument(
        "--source", type=Path, default=None, help="folder of sharp photos (default: scikit-image's photos)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop", type=int, default=None, help="cut random crop x crop windows (default: whole photos)")
    parser.add_argument("--kernel-shape", choices=KERNEL_SHAPES, default="shake",
                        help="camera shake (random walk, default) or straight linear motion")
    parser.add_argument("--kernel-sizes", type=int, nargs=2, default=(MIN_KERNEL_SIZE, MAX_KERNEL_SIZE),
                        metavar=("LOW", "HIGH"), help=f"odd kernel sizes drawn from (default {MIN_KERNEL_SIZE} {MAX_KERNEL_SIZE})")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    holdout = [name for item in args.holdout for name in item.split(",") if name]
    try:
        if args.source is not None:
            images = _named_images(args.source)
        else:
            images = skimage_sharp_images()
        recipe = BlurRecipe(kernel_sizes=tuple(args.kernel_sizes), kernel_shape=args.kernel_shape)
        train, test = split_holdout(images, holdout)
        train_pairs = make_pairs(train, args.out / "train", args.per_image, args.seed, args.crop, recipe, progress=True)
        test_pairs = make_pairs(test, args.out / "test", args.per_image, args.seed, args.crop, recipe, progress=True)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(train_pairs)} training and {len(test_pairs)} test pairs under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
