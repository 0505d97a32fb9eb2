"""Overlapping tiles for frames larger than the Restormer engine takes whole.

HI-Diff's prior is pooled over the whole frame and the Restormer's channel attention is global
over H*W, so tiling changes the result. Only the Restormer is tiled: the prior z_0 is computed
once from the whole frame and shared by every tile, and tiles overlap (``overlap`` pixels,
default 32) and are blended with raised-cosine ramps, so that no seam is a hard edge between two
independently normalised tiles. Along each axis a tile's weight rises from ~0 to 1 over
``overlap`` pixels on every side that borders another tile (flat 1 on the frame's own borders);
the 2-D weight is the outer product and the output is sum(w * tile) / sum(w).

What it costs in accuracy depends on the weights and the tile size (larger tiles differ less):
tests/engines/test_tiling.py measures the tiny test model on a natural image and bounds the
difference; measure trained weights before relying on tiles. :class:`Tiling` says when a frame is
tiled; :func:`plan_tiles` and :func:`run_tiled` do it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from engines.contracts import IMAGE_MULTIPLE

DEFAULT_OVERLAP = 32


@dataclass(frozen=True)
class Tiling:
    """When the Restormer runs in tiles.

    - ``tile``: None tiles only frames the engines cannot take whole (beyond the Restormer
      engine's largest input or ``max_pixels``); N > 0 always tiles with N x N tiles (a multiple
      of 8); 0 never tiles (such frames are refused).
    - ``overlap``: pixels shared by neighbouring tiles, blended.
    - ``max_pixels``: a memory budget for engines without a size limit of their own: frames with
      more padded pixels than this are tiled. None: no budget.
    """

    tile: int | None = None
    overlap: int = DEFAULT_OVERLAP
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        if self.tile is not None and self.tile != 0:
            check_tile_size(self.tile, self.overlap)
        elif self.overlap < 0:
            raise ValueError(f"tile_overlap {self.overlap}: expected >= 0")
        if self.max_pixels is not None and self.max_pixels < IMAGE_MULTIPLE**2:
            raise ValueError(f"max_pixels {self.max_pixels}: expected None or at least {IMAGE_MULTIPLE**2}")


@dataclass(frozen=True)
class Tile:
    """One tile: rows ``top:top+height``, columns ``left:left+width`` of the padded frame."""

    top: int
    left: int
    height: int
    width: int


def check_tile_size(tile: int, overlap: int) -> None:
    """Raise ValueError unless ``tile`` is a positive multiple of 8 larger than ``2 * overlap``."""
    if tile <= 0 or tile % IMAGE_MULTIPLE:
        raise ValueError(f"tile size {tile} is not a positive multiple of {IMAGE_MULTIPLE}; "
                         f"pick e.g. {max(IMAGE_MULTIPLE, tile // IMAGE_MULTIPLE * IMAGE_MULTIPLE)}")
    if overlap < 0 or tile <= 2 * overlap:
        raise ValueError(f"tile size {tile} with overlap {overlap}: need 0 <= overlap and tile > 2 * overlap")


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: stride ``tile - overlap``, the last tile flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    starts = [min(i * stride, length - tile) for i in range(count)]
    return sorted(set(starts))


def plan_tiles(height: int, width: int, tile_h: int, tile_w: int, overlap: int = DEFAULT_OVERLAP) -> list[Tile]:
    """Tiles covering a ``height x width`` frame (multiples of 8), each at most ``tile_h x tile_w``.

    Tile sizes stay multiples of 8 because the frame and the tile sizes are.
    """
    th, tw = min(tile_h, height), min(tile_w, width)
    return [Tile(top, left, th, tw)
            for top in _starts(height, th, overlap)
            for left in _starts(width, tw, overlap)]


def _ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool, device: torch.device) -> torch.Tensor:
    weight = torch.ones(length, device=device)
    if overlap == 0:
        return weight
    # Raised cosine sampled at pixel centres: strictly positive, so every pixel has weight.
    i = torch.arange(overlap, device=device, dtype=torch.float32)
    rise = 0.5 - 0.5 * torch.cos(math.pi * (i + 0.5) / overlap)
    n = min(overlap, length)
    if ramp_start:
        weight[:n] = torch.minimum(weight[:n], rise[:n])
    if ramp_end:
        weight[length - n:] = torch.minimum(weight[length - n:], rise[:n].flip(0))
    return weight


def tile_weight(t: Tile, height: int, width: int, overlap: int, device: torch.device) -> torch.Tensor:
    """``(1, 1, t.height, t.width)`` blending weight of tile ``t`` in a ``height x width`` frame."""
    wy = _ramp(t.height, overlap, t.top > 0, t.top + t.height < height, device)
    wx = _ramp(t.width, overlap, t.left > 0, t.left + t.width < width, device)
    return (wy[:, None] * wx[None, :])[None, None]


def run_tiled(restore: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], blur: torch.Tensor,
              prior: torch.Tensor, tiles: list[Tile], overlap: int) -> torch.Tensor:
    """Run ``restore(blur_tile, prior)`` on every tile and blend.

    blur (B, 3, H, W) float32 (H, W multiples of 8); prior (B, N, C') from the whole frame.
    Returns (B, 3, H, W) float32.
    """
    _, _, height, width = blur.shape
    out = torch.zeros_like(blur)
    total = torch.zeros((1, 1, height, width), device=blur.device, dtype=blur.dtype)
    for t in tiles:
        rows, cols = slice(t.top, t.top + t.height), slice(t.left, t.left + t.width)
        sharp = restore(blur[:, :, rows, cols].contiguous(), prior)
        weight = tile_weight(t, height, width, overlap, blur.device)
        out[:, :, rows, cols] += sharp * weight
        total[:, :, rows, cols] += weight
    return out.div_(total)
