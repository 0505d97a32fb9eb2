"""Training and test data: paired datasets, augmentation, synthetic blur.

- :mod:`hidiff.data.paired`: pairs found by name (folders, GoPro, HIDE, RealBlur) and the
  ``PairedImages`` / ``PairedFolder`` datasets.
- :mod:`hidiff.data.augment`: paired random crop, the 8 flips/rotations, progressive learning.
- :mod:`hidiff.data.synthetic_blur`: blurry/sharp pairs made from sharp photos
  (``python -m hidiff.data.synthetic_blur``; not imported here so that ``-m`` runs it cleanly).
"""
from hidiff.data.augment import FlipRotate, ProgressiveSchedule, dihedral, random_crop_pair
from hidiff.data.paired import (
    ImagePair,
    PairedFolder,
    PairedImages,
    PairingError,
    PairItem,
    folder_pairs,
    gopro_pairs,
    hide_pairs,
    image_to_tensor,
    pair_by_name,
    read_pair,
    read_rgb,
    realblur_pairs,
)

__all__ = [
    "FlipRotate",
    "ImagePair",
    "PairedFolder",
    "PairedImages",
    "PairingError",
    "PairItem",
    "ProgressiveSchedule",
    "dihedral",
    "folder_pairs",
    "gopro_pairs",
    "hide_pairs",
    "image_to_tensor",
    "pair_by_name",
    "random_crop_pair",
    "read_pair",
    "read_rgb",
    "realblur_pairs",
]
