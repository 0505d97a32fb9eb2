"""HI-Diff inference over three engines, written once: pad, LE_DM, the T steps, Restormer, crop.

    pipeline = Pipeline(engine_set.engines, noise, num_timesteps=8, backend=engine_set.backend)
    sharp = pipeline.run(blur)   # (B, 3, H, W) float32 in [0, 1], any H and W, on the engines' device

The stages (:data:`STAGES`), as the official ``test()``:

    1. pad              reflect bottom and right to multiples of 8 (replicate where a side is
                        too short), then up to the engines' smallest input
    2. le_dm            c = LE_DM(blur), from the whole frame (an area-downscaled copy when the
                        LE_DM engine cannot take it whole: its features are pooled to a few tokens)
    3. denoising_steps  z_0 from z_T by the T reverse steps (:mod:`engines.denoise_loop`)
    4. restormer        sharp = Restormer(blur, z_0), in overlapping tiles that share z_0 when
                        the frame is too large (:mod:`engines.tiling`)
    5. crop             back to H x W

The runtime's Deblurrer (frames, health checks, batches and video streams around it), the
benchmark (stage times through ``on_stage``) and the export's verification (ONNX Runtime engines
against the PyTorch model) all run this class; nothing in it branches on the backend.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from engines.base import Engine, EngineError
from engines.contracts import DENOISE_STEP, GRAPH_NAMES, IMAGE_MULTIPLE, LE_DM, RESTORMER, pad_to_multiple
from engines.denoise_loop import DenoiseLoop
from engines.tiling import Tile, Tiling, plan_tiles, run_tiled

STAGES = ("pad", "le_dm", "denoising_steps", "restormer", "crop")
StageHook = Callable[[str], None]


class FrameTooLarge(ValueError):
    """A frame exceeds what the engines take whole, and tiling is off (``Tiling(tile=0)``)."""


@dataclass(frozen=True)
class ImageLimits:
    """What an image engine takes: padded (height, width) range and the largest batch."""

    min_hw: tuple[int, int] = (IMAGE_MULTIPLE, IMAGE_MULTIPLE)
    max_hw: tuple[int, int] | None = None
    max_batch: int | None = None

    def fits(self, height: int, width: int) -> bool:
        return self.max_hw is None or (height <= self.max_hw[0] and width <= self.max_hw[1])


def image_limits(engine: Any) -> ImageLimits:
    """Limits from an engine's optimization profiles (TensorRT), none for the other backends.

    Over several profiles, the union of their ranges (TensorRT picks the profile that covers a
    shape and names them all when none does).
    """
    profiles = getattr(engine, "profiles", None)
    if not profiles:
        return ImageLimits()
    shapes = [ranges["blur"] for ranges in profiles if "blur" in ranges]
    if not shapes:
        return ImageLimits()
    lo_h = min(lo[2] for lo, _, _ in shapes)
    lo_w = min(lo[3] for lo, _, _ in shapes)
    hi_h = max(hi[2] for _, _, hi in shapes)
    hi_w = max(hi[3] for _, _, hi in shapes)
    hi_b = max(hi[0] for _, _, hi in shapes)
    return ImageLimits((lo_h, lo_w), (hi_h, hi_w), hi_b)


def pad_bottom_right(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad (..., H, W) bottom and right up to ``height x width``: reflect where both sides allow
    it (the official test-time padding), else replicate (a side shorter than its padding)."""
    h, w = x.shape[-2:]
    ph, pw = max(0, height - h), max(0, width - w)
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _no_hook(stage: str) -> None:
    pass


class Pipeline:
    """The stages of the module docstring over ``engines`` (``{"le_dm", "denoise_step", "restormer"}``).

    ``noise``: z_T (N, C') float32, shared by every frame and batch row (a video does not
    flicker); ``num_timesteps``: T, baked into the denoise_step graph; ``backend``: the engines'
    registry name (whether torch can capture the loop); ``cuda_graphs``: the denoising loop in
    CUDA graphs where the backend allows; ``tiling``: when the Restormer runs in tiles.
    """

    def __init__(self, engines: Mapping[str, Engine], noise: torch.Tensor, num_timesteps: int, *, backend: str,
                 cuda_graphs: bool = True, tiling: Tiling = Tiling()):
        missing = [name for name in GRAPH_NAMES if name not in engines]
        if missing:
            raise EngineError(f"the pipeline needs the graphs {list(GRAPH_NAMES)}; {missing} are missing "
                              f"(got {sorted(engines)})")
        self.le_dm, self.restormer = engines[LE_DM], engines[RESTORMER]
        self.device = self.le_dm.device
        self.tiling = tiling
        self.encode_limits = image_limits(self.le_dm)
        self.decode_limits = image_limits(self.restormer)
        tile = tiling.tile
        if tile and not self.decode_limits.fits(tile, tile):
            raise ValueError(f"tile={tile} exceeds the Restormer engine's largest input "
                             f"{self.decode_limits.max_hw}; pick a tile within it")
        if tile and tile < max(self.decode_limits.min_hw):
            raise ValueError(f"tile={tile} is below the Restormer engine's smallest input "
                             f"{self.decode_limits.min_hw}; pick a larger tile")
        fixed = engines[DENOISE_STEP].contract.fixed_dims
        prior_shape = (int(fixed["tokens"]), int(fixed["channels"]))
        if tuple(noise.shape) != prior_shape:
            raise ValueError(f"noise z_T has shape {tuple(noise.shape)}; the engines' prior is {prior_shape} (N, C')")
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps {num_timesteps}: expected T >= 1")
        self.noise = noise.to(self.device, torch.float32)
        self.loop = DenoiseLoop(engines[DENOISE_STEP], self.noise, range(num_timesteps - 1, -1, -1), cuda_graphs,
                                backend)

    @property
    def max_batch(self) -> int | None:
        """The largest batch both image engines take (their profiles), None when unlimited."""
        caps = [b for b in (self.encode_limits.max_batch, self.decode_limits.max_batch) if b is not None]
        return min(caps) if caps else None

    @property
    def min_hw(self) -> tuple[int, int]:
        """The smallest padded (height, width) both image engines take."""
        return (max(self.encode_limits.min_hw[0], self.decode_limits.min_hw[0]),
                max(self.encode_limits.min_hw[1], self.decode_limits.min_hw[1]))

    def run(self, blur: torch.Tensor, on_stage: StageHook | None = None) -> torch.Tensor:
        """blur (B, 3, H, W) float32 in [0, 1] on the engines' device, any H and W ->
        sharp (B, 3, H, W) float32, not clamped.

        ``on_stage(name)`` is called as each stage's work has been queued (names: :data:`STAGES`),
        without a synchronisation: a caller timing the stages records CUDA events there. Raises
        :class:`FrameTooLarge` before any work when the frame cannot run whole and tiling is off.
        """
        mark = on_stage or _no_hook
        _, _, height, width = blur.shape
        # 1. pad to the multiple of 8, then up to the engines' smallest input
        x = pad_bottom_right(blur, pad_to_multiple(height), pad_to_multiple(width))
        x = pad_bottom_right(x, *self.min_hw)
        plan = self.plan(x.shape[2], x.shape[3])
        mark("pad")
        # 2. c = LE_DM(blur), from the whole frame
        cond = self._encode(x)
        mark("le_dm")
        # 3. z_0 from z_T by the T reverse steps t = T-1 .. 0
        prior = self.loop.run(cond)
        mark("denoising_steps")
        # 4. sharp = Restormer(blur, z_0), tiled when the frame is too large, every tile with this prior
        if plan is None:
            sharp = self._decode(x, prior)
        else:
            tiles, overlap = plan
            sharp = run_tiled(self._decode, x, prior, tiles, overlap)
        mark("restormer")
        # 5. crop back to H x W
        sharp = sharp[..., :height, :width]
        mark("crop")
        return sharp

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """cond (B, N, C') from the padded frame. If LE_DM's engine cannot take the frame whole,
        it sees an area-downscaled copy that fits (sides multiples of 8): the prior is pooled to
        a few tokens anyway, so a smaller copy of the same frame approximates it; a tile would not."""
        _, _, h, w = x.shape
        if not self.encode_limits.fits(h, w):
            max_h, max_w = self.encode_limits.max_hw  # type: ignore[misc]
            scale = min(max_h / h, max_w / w)
            size = (max(self.encode_limits.min_hw[0], int(h * scale) // IMAGE_MULTIPLE * IMAGE_MULTIPLE),
                    max(self.encode_limits.min_hw[1], int(w * scale) // IMAGE_MULTIPLE * IMAGE_MULTIPLE))
            x = F.interpolate(x, size=size, mode="area")
        return self.le_dm.infer({"blur": x})["cond"]

    def _decode(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return self.restormer.infer({"blur": x, "prior": prior})["sharp"]

    def plan(self, height: int, width: int) -> tuple[list[Tile], int] | None:
        """(tiles, overlap) for a frame of this size (padded or not), or None to run it whole.
        Raises :class:`FrameTooLarge` when it cannot run whole and tiling is off."""
        ph, pw = pad_to_multiple(height), pad_to_multiple(width)
        over_profile = not self.decode_limits.fits(ph, pw)
        max_pixels = self.tiling.max_pixels
        over_budget = max_pixels is not None and ph * pw > max_pixels
        tile = self.tiling.tile
        if tile == 0:
            if over_profile or over_budget:
                limit = (f"the Restormer engine's profile allows at most {self.decode_limits.max_hw}" if over_profile
                         else f"max_pixels is {max_pixels}")
                padded = f" (padded {ph} x {pw})" if (ph, pw) != (height, width) else ""
                raise FrameTooLarge(f"a {height} x {width} frame{padded} cannot be run whole: {limit}. "
                                    "Allow tiling (tile=None or tile=N), or resize the frame")
            return None
        if tile:
            tile_h = tile_w = tile
        elif over_profile or over_budget:
            tile_h, tile_w = self.decode_limits.max_hw or (ph, pw)
            if max_pixels is not None:
                side = max(IMAGE_MULTIPLE, int(math.isqrt(max_pixels)) // IMAGE_MULTIPLE * IMAGE_MULTIPLE)
                tile_h, tile_w = min(tile_h, side), min(tile_w, side)
        else:
            return None
        if ph <= tile_h and pw <= tile_w:
            return None
        overlap = min(self.tiling.overlap, (min(tile_h, tile_w) - 1) // 2)
        return plan_tiles(ph, pw, tile_h, tile_w, overlap), overlap

    def describe_tiling(self) -> str:
        """When frames are tiled, in words."""
        tile, overlap = self.tiling.tile, self.tiling.overlap
        if tile == 0:
            return "never (tile=0: frames beyond the engines' limits raise)"
        if tile:
            return f"always, {tile} x {tile} tiles, overlap {overlap}"
        limits = [f"Restormer profile max {self.decode_limits.max_hw}" if self.decode_limits.max_hw else "",
                  f"max_pixels {self.tiling.max_pixels}" if self.tiling.max_pixels else ""]
        reason = " and ".join(s for s in limits if s) or "no limit known; tile=N forces tiling"
        return f"when needed ({reason}), overlap {overlap}"
