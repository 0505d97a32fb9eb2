"""A deterministic, resumable stream of training batches.

Order: epoch e visits the data set in ``torch.randperm(n)`` order drawn from a generator seeded
with ``seed + e``, padded and strided over ranks exactly as ``DistributedSampler`` does, and the
epochs follow one another without end. Content: sample (e, i) is cropped, blurred and flipped
with randomness drawn only from (seed, e, i). The whole stream is therefore a function of the seed
and of how many samples a rank has consumed, which is all a checkpoint needs to store; the
number of DataLoader workers does not change it.

Progressive learning changes patch and batch size at stage boundaries; :class:`BatchStream`
then starts a new DataLoader at the current position with the new sizes.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from hidiff.data.augment import DIHEDRAL_MODES, dihedral, random_crop_pair
from hidiff.data.paired import ImagePair, folder_pairs, list_images, read_rgb
from hidiff.training.config import DataConfig, SyntheticConfig

SampleKey = tuple[int, int, int]  # (epoch, index, patch size)


def sample_seed(*entropy: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence: no correlated neighbours)."""
    return int(np.random.SeedSequence([int(e) & 0xFFFF_FFFF_FFFF_FFFF for e in entropy]).generate_state(1, np.uint64)[0]) >> 1


class ResumableSampler(Sampler[SampleKey]):
    """Endless (epoch, index, patch) keys for one rank, starting after ``start`` consumed samples.

    Within an epoch the order is ``DistributedSampler(shuffle=True, drop_last=False)``'s.
    """

    def __init__(self, length: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0, patch: int = 0):
        if length < 1:
            raise ValueError("the training set is empty")
        self.length = length
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start = start
        self.patch = patch
        self.per_rank = math.ceil(length / world_size)

    def epoch_indices(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.length, generator=g).tolist()
        total = self.per_rank * self.world_size
        padding = total - len(order)
        if padding:
            order += (order * math.ceil(padding / len(order)))[:padding]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[SampleKey]:
        epoch, position = divmod(self.start, self.per_rank)
        while True:
            indices = self.epoch_indices(epoch)
            for index in indices[position:]:
                yield (epoch, index, self.patch)
            epoch, position = epoch + 1, 0

    def __len__(self) -> int:  # DataLoader asks only when it must; the stream has no end.
        raise TypeError("ResumableSampler is endless")


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


class FolderTrainPairs(Dataset):
    """Random ``patch`` crops of blurry/sharp pairs, indexed by (epoch, index, patch) keys.

    Item: dict(blur=(3, P, P) float32 in [0, 1] RGB, sharp=same). cache=True decodes every image
    once at construction (errors then name the file immediately).
    """

    def __init__(self, pairs: Sequence[ImagePair], seed: int, flip_rotate: bool = True, cache: bool = False):
        self.pairs = list(pairs)
        self.seed = seed
        self.flip_rotate = flip_rotate
        self.cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache:
            self.cache = [self._read(pair) for pair in tqdm(self.pairs, desc="caching training pairs", unit="pair", leave=False)]

    @staticmethod
    def _read(pair: ImagePair) -> tuple[np.ndarray, np.ndarray]:
        blur, sharp = read_rgb(pair.blur), read_rgb(pair.sharp)
        if blur.shape != sharp.shape:
            raise ValueError(
                f"pair {pair.name!r}: blurry image {pair.blur} is {blur.shape[1]}x{blur.shape[0]} but sharp "
                f"image {pair.sharp} is {sharp.shape[1]}x{sharp.shape[0]}; they must match"
            )
        return blur, sharp

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor]:
        epoch, index, patch = key
        pair = self.pairs[index]
        blur, sharp = self.cache[index] if self.cache is not None else self._read(pair)
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        blur, sharp = random_crop_pair(blur, sharp, patch, generator=g, name=str(pair.blur))
        if self.flip_rotate:
            mode = int(torch.randint(0, DIHEDRAL_MODES, (1,), generator=g).item())
            blur, sharp = dihedral(blur, mode), dihedral(sharp, mode)
        return {"blur": _to_tensor(blur), "sharp": _to_tensor(sharp)}


class SyntheticTrainPairs(Dataset):
    """Pairs made on the fly: sample (e, i) crops photo ``i % photos`` at random and blurs it with a
    fresh camera-shake kernel, noise and JPEG (hidiff.data.synthetic_blur.make_pair), all drawn
    from (seed, e, i). ``length`` samples make one epoch."""

    def __init__(self, photos: Sequence[tuple[str, np.ndarray]], length: int, seed: int, flip_rotate: bool = True,
                 recipe: Any = None, rescale: tuple[float, float] = (1.0, 1.0), channel_shuffle: bool = False):
        from hidiff.data.synthetic_blur import BlurRecipe

        if not photos:
            raise ValueError("the synthetic training source has no photos")
        if length < 1:
            raise ValueError(f"data.synthetic.epoch_length must be >= 1, got {length}")
        self.photos = list(photos)
        self.length = length
        self.seed = seed
        self.flip_rotate = flip_rotate
        self.recipe = recipe if recipe is not None else BlurRecipe()
        self.rescale = rescale
        self.channel_shuffle = channel_shuffle

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor]:
        from hidiff.data.synthetic_blur import make_pair

        epoch, index, patch = key
        name, photo = self.photos[index % len(self.photos)]
        rng = np.random.default_rng(sample_seed(self.seed, epoch, index))
        if self.rescale != (1.0, 1.0):
            photo = _rescaled(photo, rng, self.rescale, patch)
        if self.channel_shuffle:
            photo = photo[:, :, rng.permutation(3)]
        blur, sharp, _ = make_pair(photo, rng, self.recipe, crop=patch, name=name)
        if self.flip_rotate:
            mode = int(rng.integers(0, DIHEDRAL_MODES))
            blur, sharp = dihedral(blur, mode), dihedral(sharp, mode)
        return {"blur": _to_tensor(blur), "sharp": _to_tensor(sharp)}


def _rescaled(photo: np.ndarray, rng: np.random.Generator, scales: tuple[float, float], patch: int) -> np.ndarray:
    """``photo`` downscaled by a factor drawn from ``scales`` (area resampling), never below ``patch``."""
    low, high = scales
    low = min(max(low, patch / min(photo.shape[:2])), high)
    scale = float(rng.uniform(low, high))
    height, width = (max(patch, round(n * scale)) for n in photo.shape[:2])
    if (height, width) == photo.shape[:2]:
        return photo
    return cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)


def blur_recipe(cfg: SyntheticConfig) -> Any:
    """The hidiff.data.synthetic_blur.BlurRecipe of a synthetic source."""
    from hidiff.data.synthetic_blur import BlurRecipe

    return BlurRecipe(kernel_sizes=cfg.kernel_sizes, noise_sigma=cfg.noise_sigma, shot_noise=cfg.shot_noise,
                      jpeg_probability=cfg.jpeg_probability, jpeg_quality=cfg.jpeg_quality,
                      kernel_shape=cfg.kernel_shape)


def synthetic_photos(cfg: SyntheticConfig) -> list[tuple[str, np.ndarray]]:
    """The training photos of a synthetic source: all of ``cfg.source`` but the held-out ones."""
    from hidiff.data.synthetic_blur import skimage_sharp_images, split_holdout

    if cfg.source == "skimage":
        images = skimage_sharp_images()
    elif cfg.source == "skimage-extended":
        images = skimage_sharp_images() + skimage_extra_images()
    else:
        images = [(stem, read_rgb(path)) for stem, path in list_images(cfg.source, label="sharp photo").items()]
    if not cfg.holdout:
        return images
    train, _ = split_holdout(images, list(cfg.holdout))
    return train


# Greyscale photographs and textures bundled inside scikit-image (no download), all at least
# 300 x 300 so every progressive patch size fits. Not clock_motion (it is motion-blurred).
SKIMAGE_EXTRA = ("camera", "coins", "moon", "brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry")


def skimage_extra_images() -> list[tuple[str, np.ndarray]]:
    """More of scikit-image's bundled images as (name, (H, W, 3) uint8 RGB); greyscale repeated to RGB."""
    from skimage import data

    images = []
    for name in SKIMAGE_EXTRA:
        image = np.asarray(getattr(data, name)())
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        images.append((name, np.ascontiguousarray(image[:, :, :3]).astype(np.uint8)))
    images.append(("motorcycle_right", np.ascontiguousarray(data.stereo_motorcycle()[1][:, :, :3])))
    return images


def build_train_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """The training set of ``cfg``: the folders' pairs, or the synthetic source (not both)."""
    if cfg.train and cfg.synthetic is not None:
        raise ValueError("data.train and data.synthetic are both set; choose one training source")
    if cfg.synthetic is not None:
        return SyntheticTrainPairs(synthetic_photos(cfg.synthetic), cfg.synthetic.epoch_length, seed, cfg.flip_rotate,
                                   blur_recipe(cfg.synthetic), cfg.synthetic.rescale, cfg.synthetic.channel_shuffle)
    pairs: list[ImagePair] = []
    for folders in cfg.train:
        pairs += folder_pairs(folders.input, folders.target)
    return FolderTrainPairs(pairs, seed, cfg.flip_rotate, cfg.cache)


def default_workers(requested: int | None, device: torch.device) -> int:
    if requested is not None:
        return requested
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0


class BatchStream:
    """Batches of (blur, sharp) (B, 3, P, P) float32 for one rank, resumable by sample count.

    ``next_batch(patch, batch)`` returns the next batch of that size; a change of size (a new
    progressive stage) restarts the loader at the current position. ``samples_consumed`` is what
    a checkpoint stores.
    """

    def __init__(self, dataset: Dataset, *, seed: int, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pin_memory: bool = False, samples_consumed: int = 0):
        self.dataset = dataset
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.samples_consumed = samples_consumed
        self._sizes: tuple[int, int] | None = None
        self._iterator: Iterator[Any] | None = None

    def state(self) -> dict[str, int]:
        """Where this rank is in the stream: seed and samples consumed define it; epoch and
        position (within the rank's share of the epoch) are stored for reading."""
        per_rank = math.ceil(len(self.dataset) / self.world_size)  # type: ignore[arg-type]
        epoch, position = divmod(self.samples_consumed, per_rank)
        return {"seed": self.seed, "samples_consumed": self.samples_consumed, "world_size": self.world_size,
                "epoch": epoch, "position": position}

    def _start(self, patch: int, batch: int) -> None:
        self._iterator = None  # let the old loader's workers go first
        length = len(self.dataset)  # type: ignore[arg-type]
        sampler = ResumableSampler(length, self.seed, self.rank, self.world_size, self.samples_consumed, patch)
        loader = DataLoader(
            self.dataset,
            batch_size=batch,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            # Our own generator: creating a loader must not draw from the global RNG (resume would differ).
            # No cv2.setNumThreads in the workers: after the parent has used OpenCV's thread pool,
            # that call deadlocks in a forked child.
            generator=torch.Generator().manual_seed(self.seed),
            prefetch_factor=4 if self.num_workers else None,
        )
        self._iterator = iter(loader)
        self._sizes = (patch, batch)

    def next_batch(self, patch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._sizes != (patch, batch) or self._iterator is None:
            self._start(patch, batch)
        item = next(self._iterator)  # type: ignore[arg-type]
        self.samples_consumed += batch
        return item["blur"], item["sharp"]

    def close(self) -> None:
        self._iterator = None


def validation_pairs(val_input: str | Path, val_target: str | Path, limit: int) -> list[ImagePair]:
    """The first ``limit`` pairs (by name) of a validation folder pair."""
    return folder_pairs(val_input, val_target)[:limit]
