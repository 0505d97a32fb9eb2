"""Training augmentation and progressive patch/batch sizes, as HI-Diff (after Restormer) trains.

Official behaviour (zhengchen1999/HI-Diff, hi_diff/data/paired_image_ir_dataset.py and
hi_diff/utils/transforms.py):
- one random crop of ``gt_size`` at the same place in the blurry and the sharp image;
- then ONE of the 8 flips/rotations of the square, drawn uniformly (``random_augmentation``:
  identity, flip up-down, rot90, rot90 + flip, rot180, rot180 + flip, rot270, rot270 + flip),
  applied to both images. :class:`FlipRotate` keeps that numbering.

Progressive learning (train.py of the official repository): the data loader always draws
``batch_size_per_gpu`` (16) crops of the largest patch (``gt_size`` 384). At iteration ``i``
(counted from 1) the stage is the first one whose cumulative iteration count reaches ``i``;
within a stage the loaded batch is cut down to the stage's size: a random subset of
``mini_batch_sizes[stage]`` samples and one random ``gt_sizes[stage]`` square window, the same
window for every sample of the batch. :class:`ProgressiveSchedule` does exactly that, with two
documented differences: window offsets are drawn from the full range 0..P-p (the official
``int((P - p) * random.random())`` never reaches the last offset), and sizes are per process
(the official batch size is per GPU).

Randomness comes from a ``torch.Generator`` when one is given (deterministic), otherwise from
torch's global generator (which DataLoader seeds per worker).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def _randint(low: int, high_inclusive: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(low, high_inclusive + 1, (1,), generator=generator).item())


def random_crop_pair(
    blur: np.ndarray,
    sharp: np.ndarray,
    size: int,
    generator: torch.Generator | None = None,
    name: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the same random ``size`` x ``size`` window out of both (H, W, C) images.

    Raises ValueError naming ``name`` (the file) when the pair is smaller than the patch or the
    two images differ in size.
    """
    label = f" {name}" if name else ""
    if blur.shape[:2] != sharp.shape[:2]:
        raise ValueError(f"pair{label}: blurry image is {blur.shape[:2]} but sharp image is {sharp.shape[:2]} (H, W)")
    height, width = blur.shape[:2]
    if height < size or width < size:
        raise ValueError(
            f"image{label} is {width}x{height}, smaller than the {size}x{size} training patch; "
            "remove it or train with a smaller patch size"
        )
    top = _randint(0, height - size, generator)
    left = _randint(0, width - size, generator)
    return blur[top : top + size, left : left + size], sharp[top : top + size, left : left + size]


DIHEDRAL_MODES = 8


def dihedral(image: np.ndarray, mode: int) -> np.ndarray:
    """One of the 8 symmetries of the square on an (H, W, ...) array, numbered as the official
    ``data_augmentation``: rotate by 90 degrees ``mode // 2`` times (counter-clockwise), then
    flip up-down when ``mode`` is odd."""
    if not 0 <= mode < DIHEDRAL_MODES:
        raise ValueError(f"dihedral mode must be in 0..7, got {mode}")
    out = np.rot90(image, k=mode // 2)
    if mode % 2:
        out = np.flipud(out)
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class FlipRotate:
    """Pair transform: the same uniformly drawn flip/rotation (one of 8) on both images.

    Call as ``FlipRotate()(blur, sharp, generator)``; usable as ``PairedImages(transform=...)``.
    """

    def __call__(
        self, blur: np.ndarray, sharp: np.ndarray, generator: torch.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        mode = _randint(0, DIHEDRAL_MODES - 1, generator)
        return dihedral(blur, mode), dihedral(sharp, mode)


@dataclass(frozen=True)
class ProgressiveSchedule:
    """Patch and batch size per training stage (progressive learning).

    iters: iterations of each stage; patch_sizes, batch_sizes: the stage's square patch side and
    batch size. The loader should draw ``max_batch_size`` crops of ``max_patch_size``;
    :meth:`crop_batch` cuts each loaded batch down to the current stage.
    """

    iters: tuple[int, ...] = (20000, 20000, 20000, 20000, 20000, 200000)
    patch_sizes: tuple[int, ...] = (128, 160, 192, 256, 320, 384)
    batch_sizes: tuple[int, ...] = (16, 10, 8, 4, 2, 2)

    def __post_init__(self) -> None:
        lengths = {len(self.iters), len(self.patch_sizes), len(self.batch_sizes)}
        if len(lengths) != 1 or not self.iters:
            raise ValueError(
                f"progressive schedule needs one iters, patch size and batch size per stage; got "
                f"{len(self.iters)} iters, {len(self.patch_sizes)} patch sizes, {len(self.batch_sizes)} batch sizes"
            )
        named = (("iters", self.iters), ("patch_sizes", self.patch_sizes), ("batch_sizes", self.batch_sizes))
        for label, values in named:
            if any(int(v) != v or v <= 0 for v in values):
                raise ValueError(f"progressive schedule {label} must be positive integers, got {values}")

    @classmethod
    def from_options(cls, train_dataset: Mapping[str, Any]) -> ProgressiveSchedule:
        """From the ``datasets: train:`` section of an official option file
        (keys ``iters``, ``gt_sizes``, ``mini_batch_sizes``)."""
        try:
            return cls(
                iters=tuple(int(v) for v in train_dataset["iters"]),
                patch_sizes=tuple(int(v) for v in train_dataset["gt_sizes"]),
                batch_sizes=tuple(int(v) for v in train_dataset["mini_batch_sizes"]),
            )
        except KeyError as exc:
            raise ValueError(
                f"the train dataset options lack {exc.args[0]!r}; "
                "progressive learning needs iters, gt_sizes and mini_batch_sizes"
            ) from exc

    @property
    def total_iters(self) -> int:
        return sum(self.iters)

    @property
    def max_patch_size(self) -> int:
        return max(self.patch_sizes)

    @property
    def max_batch_size(self) -> int:
        return max(self.batch_sizes)

    def stage_index(self, iteration: int) -> int:
        """Stage of ``iteration`` (counted from 1): the first stage whose cumulative iteration
        count is >= iteration; iterations past the end stay in the last stage."""
        if iteration < 1:
            raise ValueError(f"iterations are counted from 1, got {iteration}")
        boundary = 0
        for index, length in enumerate(self.iters):
            boundary += length
            if iteration <= boundary:
                return index
        return len(self.iters) - 1

    def stage_at(self, iteration: int) -> tuple[int, int]:
        """(patch_size, batch_size) at ``iteration`` (counted from 1)."""
        index = self.stage_index(iteration)
        return self.patch_sizes[index], self.batch_sizes[index]

    def crop_batch(
        self,
        blur: torch.Tensor,
        sharp: torch.Tensor,
        iteration: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cut a loaded (B, 3, P, P) batch pair down to the stage of ``iteration``.

        Keeps a random subset of min(B, batch_size) samples and one random patch_size window
        (the same for all samples and for blur and sharp). Returns (b, 3, p, p) tensors.
        """
        if blur.shape != sharp.shape or blur.ndim != 4:
            raise ValueError(
                f"crop_batch expects two equal (B, C, H, W) tensors, got {tuple(blur.shape)} and {tuple(sharp.shape)}"
            )
        patch, batch = self.stage_at(iteration)
        count, _, height, width = blur.shape
        if height < patch or width < patch:
            raise ValueError(
                f"iteration {iteration} needs {patch}x{patch} patches but the loader gave {width}x{height}; "
                f"load patches of max_patch_size ({self.max_patch_size})"
            )
        if batch < count:
            keep = torch.randperm(count, generator=generator)[:batch]
            blur, sharp = blur[keep], sharp[keep]
        top = _randint(0, height - patch, generator)
        left = _randint(0, width - patch, generator)
        window = (slice(None), slice(None), slice(top, top + patch), slice(left, left + patch))
        return blur[window], sharp[window]
