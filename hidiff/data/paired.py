"""Blurry/sharp image pairs: finding them on disk, reading them, and serving them to training.

Pairs are matched BY NAME (file stem), never by sorted position: the official scripts zip two
sorted listings, so one missing file silently shifts every pair after it. Here a missing partner,
an extra file, an empty folder or an unreadable image is an error that names the file.

Layouts understood (each function's docstring says exactly what it looks for):
- any two folders of images with the same stems: :class:`PairedFolder`;
- GoPro, as prepared by Restormer / HI-Diff (``ROOT/{train,test}/{input,target}``) or as
  downloaded (``ROOT/{train,test}/<scene>/{blur,sharp,blur_gamma}``): :func:`gopro_pairs`;
- HIDE (``HIDE_dataset/{test/{test-close-ups,test-long-shot},train,GT}`` plus ``test.txt`` /
  ``train.txt``, or a prepared ``{input,target}``): :func:`hide_pairs`;
- RealBlur (``RealBlur_{J,R}_{train,test}_list.txt``, lines "gt_path blur_path"): :func:`realblur_pairs`.

Each dataset item is ``dict(blur=(3, H, W) float32 in [0, 1] RGB, sharp=same, name=str)``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from hidiff.data.augment import random_crop_pair

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# (blur, sharp, generator) -> (blur, sharp) on (H, W, 3) uint8 arrays; see hidiff.data.augment.
PairTransform = Callable[[np.ndarray, np.ndarray, torch.Generator | None], tuple[np.ndarray, np.ndarray]]


class PairingError(ValueError):
    """Two folders (or a list file) do not describe the same set of images."""


class PairItem(TypedDict):
    """One dataset item: (3, H, W) float32 RGB in [0, 1] tensors and the pair's name."""

    blur: torch.Tensor
    sharp: torch.Tensor
    name: str


@dataclass(frozen=True)
class ImagePair:
    """One training/test pair: ``name`` identifies it in outputs and error messages."""

    name: str
    blur: Path
    sharp: Path


# --------------------------------------------------------------------------------------------
# Reading images and pairing files
# --------------------------------------------------------------------------------------------


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an 8-bit colour image as (H, W, 3) uint8 RGB (OpenCV reads BGR; we convert).

    Raises ValueError naming the file when it cannot be decoded, is not 8-bit, or is not a
    3-channel colour image: a corrupt file is never silently dropped or coerced.
    """
    path = Path(path)
    try:
        # imdecode over a byte buffer rather than imread: imread returns None without saying why and
        # cannot open non-ASCII paths on Windows.
        buffer = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None:
        raise ValueError(f"cannot decode image {path}: the file is empty, corrupt or not an image")
    if image.dtype != np.uint8:
        raise ValueError(f"image {path} has dtype {image.dtype}, expected 8-bit; convert it to an 8-bit PNG")
    if image.ndim != 3 or image.shape[2] != 3:
        channels = 1 if image.ndim == 2 else image.shape[2]
        raise ValueError(
            f"image {path} has {channels} channel(s), expected 3 (colour, no alpha); "
            "convert it to an RGB PNG or JPEG"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def list_images(folder: str | os.PathLike[str], *, label: str = "image") -> dict[str, Path]:
    """Images directly inside ``folder`` keyed by stem. Errors: missing folder, no images, or
    two files with the same stem (``a.png`` and ``a.jpg`` cannot be told apart by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{label} folder {folder} does not exist or is not a folder")
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in by_stem:
            raise PairingError(
                f"{label} folder {folder} holds two files named {path.stem!r}: {by_stem[path.stem].name}, {path.name}"
            )
        by_stem[path.stem] = path
    if not by_stem:
        raise PairingError(f"{label} folder {folder} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return by_stem


def _few(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def pair_by_name(
    first_dir: str | os.PathLike[str],
    second_dir: str | os.PathLike[str],
    *,
    first_label: str = "blur",
    second_label: str = "sharp",
) -> list[tuple[str, Path, Path]]:
    """(stem, first_path, second_path) for every stem, sorted by stem.

    Both folders must hold exactly the same stems; otherwise PairingError names the files
    without a partner on each side.
    """
    first = list_images(first_dir, label=first_label)
    second = list_images(second_dir, label=second_label)
    only_first = sorted(first.keys() - second.keys())
    only_second = sorted(second.keys() - first.keys())
    if only_first or only_second:
        problems = []
        if only_first:
            problems.append(
                f"{len(only_first)} {first_label} file(s) without a {second_label} partner in {second_dir}: "
                f"{_few([first[s].name for s in only_first])}"
            )
        if only_second:
            problems.append(
                f"{len(only_second)} {second_label} file(s) without a {first_label} partner in {first_dir}: "
                f"{_few([second[s].name for s in only_second])}"
            )
        raise PairingError("; ".join(problems) + " (files are paired by name)")
    return [(stem, first[stem], second[stem]) for stem in sorted(first)]


def folder_pairs(blur_dir: str | os.PathLike[str], sharp_dir: str | os.PathLike[str]) -> list[ImagePair]:
    """Pairs of two folders whose images share stems (``blur_dir/x.png`` with ``sharp_dir/x.png``)."""
    return [ImagePair(stem, blur, sharp) for stem, blur, sharp in pair_by_name(blur_dir, sharp_dir)]


def _check_unique(pairs: list[ImagePair], where: str) -> list[ImagePair]:
    seen: dict[str, ImagePair] = {}
    for pair in pairs:
        if pair.name in seen:
            raise PairingError(
                f"{where}: two pairs are both named {pair.name!r} ({seen[pair.name].blur} and {pair.blur})"
            )
        seen[pair.name] = pair
    if not pairs:
        raise PairingError(f"{where}: no image pairs found")
    return pairs


# --------------------------------------------------------------------------------------------
# Benchmark layouts
# --------------------------------------------------------------------------------------------


def gopro_pairs(root: str | os.PathLike[str], split: str = "train", *, use_gamma: bool = False) -> list[ImagePair]:
    """GoPro pairs of one split, from either layout:

    - prepared (Restormer / HI-Diff ``datasets/GoPro``): ``ROOT/SPLIT/input`` and ``ROOT/SPLIT/target``,
      paired by stem; names are the stems.
    - downloaded (``GOPRO_Large``): ``ROOT/SPLIT/<scene>/blur`` and ``ROOT/SPLIT/<scene>/sharp``;
      names are ``<scene>-<stem>`` (e.g. ``GOPR0384_11_00-000001``), the names the prepared
      layout uses, so results of either layout pair with each other.
      ``use_gamma=True`` takes ``blur_gamma`` instead of ``blur`` (the paper uses ``blur``).

    If ``ROOT/SPLIT/input`` exists the prepared layout is used, otherwise the scene layout.
    """
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"GoPro split folder {split_dir} does not exist; expected ROOT/{split}/{{input,target}} "
            f"or ROOT/{split}/<scene>/{{blur,sharp}}"
        )
    if (split_dir / "input").is_dir() or (split_dir / "target").is_dir():
        if use_gamma:
            raise ValueError(
                f"use_gamma=True needs the downloaded GoPro layout (<scene>/blur_gamma), "
                f"but {split_dir} is the prepared one (input/target)"
            )
        return _check_unique(folder_pairs(split_dir / "input", split_dir / "target"), f"GoPro {split_dir}")

    blur_name = "blur_gamma" if use_gamma else "blur"
    scenes = sorted(p for p in split_dir.iterdir() if p.is_dir())
    scenes_with_pairs = [s for s in scenes if (s / blur_name).is_dir() or (s / "sharp").is_dir()]
    if not scenes_with_pairs:
        raise PairingError(
            f"GoPro split folder {split_dir} has neither input/ and target/ "
            f"nor <scene>/{blur_name} and <scene>/sharp folders"
        )
    pairs: list[ImagePair] = []
    for scene in scenes_with_pairs:
        for stem, blur, sharp in pair_by_name(scene / blur_name, scene / "sharp", first_label=blur_name):
            pairs.append(ImagePair(f"{scene.name}-{stem}", blur, sharp))
    return _check_unique(pairs, f"GoPro {split_dir}")


HIDE_TEST_SUBSETS = ("test-close-ups", "test-long-shot")


def hide_pairs(root: str | os.PathLike[str], split: str = "test") -> list[ImagePair]:
    """HIDE pairs, from either layout:

    - prepared (Restormer / HI-Diff ``datasets/test/HIDE``): ``ROOT/input`` and ``ROOT/target``
      (or ``ROOT/SPLIT/input`` and ``ROOT/SPLIT/target``), paired by stem.
    - downloaded (``HIDE_dataset``, ROOT may be it or its parent): blurry images in
      ``test/test-close-ups`` and ``test/test-long-shot`` (split "test") or ``train`` (split
      "train"); sharp images in ``GT`` under the same file name. When ``SPLIT.txt`` (one file name
      per line) is present it is authoritative: every name listed must exist in both places.
    Names are the file stems.
    """
    root = Path(root)
    for prepared in (root, root / split):
        if (prepared / "input").is_dir() or (prepared / "target").is_dir():
            return _check_unique(folder_pairs(prepared / "input", prepared / "target"), f"HIDE {prepared}")

    dataset = root / "HIDE_dataset" if (root / "HIDE_dataset").is_dir() else root
    gt_dir = dataset / "GT"
    blur_dirs = [dataset / "test" / s for s in HIDE_TEST_SUBSETS] if split == "test" else [dataset / split]
    if not gt_dir.is_dir() or not any(d.is_dir() for d in blur_dirs):
        raise FileNotFoundError(
            f"no HIDE layout under {root}: expected input/ and target/, or HIDE_dataset/GT with "
            f"{', '.join(str(d.relative_to(dataset)) for d in blur_dirs)}"
        )
    blurry: dict[str, Path] = {}
    for blur_dir in blur_dirs:
        if not blur_dir.is_dir():
            continue
        for stem, path in list_images(blur_dir, label="HIDE blur").items():
            if stem in blurry:
                raise PairingError(f"HIDE: {path} and {blurry[stem]} have the same name")
            blurry[stem] = path
    sharp = list_images(gt_dir, label="HIDE GT")

    list_file = dataset / f"{split}.txt"
    if list_file.is_file():
        wanted = [Path(line.strip()).stem for line in list_file.read_text().splitlines() if line.strip()]
        missing = [n for n in wanted if n not in blurry or n not in sharp]
        if missing:
            raise PairingError(
                f"HIDE: {len(missing)} image(s) listed in {list_file} lack a blurry image or a GT: {_few(missing)}"
            )
        names = wanted
    else:
        missing = sorted(blurry.keys() - sharp.keys())
        if missing:
            raise PairingError(f"HIDE: {len(missing)} blurry image(s) have no GT in {gt_dir}: {_few(missing)}")
        names = sorted(blurry)
    return _check_unique([ImagePair(n, blurry[n], sharp[n]) for n in names], f"HIDE {dataset}")


_REALBLUR_INDEX = re.compile(r"^blur_(\d+)$")


def realblur_pairs(root: str | os.PathLike[str], list_file: str | os.PathLike[str]) -> list[ImagePair]:
    """RealBlur pairs listed in ``list_file`` (e.g. ``RealBlur_J_test_list.txt``).

    Each non-empty line is "gt_path blur_path" (whitespace-separated), paths relative to ``root``
    (the folder holding ``RealBlur-J_ECC_IMCORR_centroid_itensity_ref/``). A relative
    ``list_file`` is looked up in ``root``. Names are ``<scene>-<n>`` for ``<scene>/blur/blur_<n>.png``
    (``scene050-6``), otherwise ``<scene>-<stem>``. Every listed file must exist.
    """
    root = Path(root)
    list_path = Path(list_file)
    if not list_path.is_absolute() and not list_path.is_file():
        list_path = root / list_path
    if not list_path.is_file():
        raise FileNotFoundError(f"RealBlur list file {list_file} not found (also looked in {root})")
    pairs: list[ImagePair] = []
    missing: list[str] = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise PairingError(f"{list_path}:{number}: expected 'gt_path blur_path', got {line.strip()!r}")
        sharp, blur = root / fields[0], root / fields[1]
        missing += [str(p) for p in (sharp, blur) if not p.is_file()]
        # .../<scene>/blur/blur_<n>.png: the scene is two levels up.
        scene = blur.parent.parent.name
        index = _REALBLUR_INDEX.match(blur.stem)
        pairs.append(ImagePair(f"{scene}-{index.group(1) if index else blur.stem}", blur, sharp))
    if missing:
        raise PairingError(f"{len(missing)} file(s) listed in {list_path} do not exist: {_few(missing)}")
    return _check_unique(pairs, f"RealBlur {list_path}")


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


def read_pair(pair: ImagePair) -> tuple[np.ndarray, np.ndarray]:
    """(blur, sharp) of a pair as (H, W, 3) uint8 RGB; a size mismatch is an error naming both files."""
    blur = read_rgb(pair.blur)
    sharp = read_rgb(pair.sharp)
    if blur.shape != sharp.shape:
        raise ValueError(
            f"pair {pair.name!r}: blurry image {pair.blur} is {blur.shape[1]}x{blur.shape[0]} "
            f"but sharp image {pair.sharp} is {sharp.shape[1]}x{sharp.shape[0]}; they must match"
        )
    return blur, sharp


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


class PairedImages(Dataset):
    """Dataset over a list of :class:`ImagePair`.

    Item: ``dict(blur=(3, H, W) float32 in [0, 1] RGB, sharp=(3, H, W) ..., name=str)``; with
    ``patch_size`` H = W = patch_size, cut at the same place in both images.

    patch_size: random crop size (training); None serves whole images (testing, batch size 1).
    transform: augmentation applied after the crop, e.g. :class:`hidiff.data.augment.FlipRotate`.
    seed: None draws crops and augmentations from torch's global generator, which DataLoader seeds
        per worker from its own ``generator``. An int makes item ``i`` of epoch ``e`` depend only on
        (seed, e, i), whatever the number of workers; call :meth:`set_epoch` to move to new crops.
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        *,
        patch_size: int | None = None,
        transform: PairTransform | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.pairs = list(pairs)
        if not self.pairs:
            raise PairingError("PairedImages got no image pairs")
        if patch_size is not None and patch_size <= 0:
            raise ValueError(f"patch_size must be positive or None, got {patch_size}")
        self.patch_size = patch_size
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of another epoch (only meaningful with a seed)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def _generator(self, index: int) -> torch.Generator | None:
        if self.seed is None:
            return None
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)

    def __getitem__(self, index: int) -> PairItem:
        pair = self.pairs[index]
        blur, sharp = read_pair(pair)
        generator = self._generator(index)
        if self.patch_size is not None:
            blur, sharp = random_crop_pair(blur, sharp, self.patch_size, generator=generator, name=str(pair.blur))
        if self.transform is not None:
            blur, sharp = self.transform(blur, sharp, generator)
        return PairItem(blur=image_to_tensor(blur), sharp=image_to_tensor(sharp), name=pair.name)


class PairedFolder(PairedImages):
    """Pairs ``blur_dir/x.*`` with ``sharp_dir/x.*`` by stem (see :class:`PairedImages` for items).

    Errors at construction: missing or empty folder, a file without a partner (named).
    Errors when an item is read: unreadable/corrupt image, size mismatch, image smaller than
    ``patch_size`` (each names the file).
    """

    def __init__(
        self,
        blur_dir: str | os.PathLike[str],
        sharp_dir: str | os.PathLike[str],
        *,
        patch_size: int | None = None,
        transform: PairTransform | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(folder_pairs(blur_dir, sharp_dir), patch_size=patch_size, transform=transform, seed=seed)
        self.blur_dir = Path(blur_dir)
        self.sharp_dir = Path(sharp_dir)
