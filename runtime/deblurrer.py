"""The Deblurrer: engines loaded once, frames in, frames out.

The core (:meth:`Deblurrer._deblur_batch`) reads like the paper, in numbered stages:

    1. check the input          (shape here; NaN/Inf and range on device, read with the result)
    2. pad to the multiple of 8 (reflect, as hidiff.model.pad_image; up to the engine's minimum)
    3. c = LE_DM(blur)          (the whole frame; a downscaled copy if LE_DM cannot take it whole)
    4. z_0 from z_T             (T denoise_step calls, one CUDA graph where the backend allows)
    5. sharp = Restormer(blur, z_0)   (in overlapping tiles sharing z_0 when the frame is too large)
    6. crop, clamp to [0, 1]

Everything stays on the engines' device. z_T is drawn once from ``torch.Generator().manual_seed(seed)``
(on the CPU, so CPU and CUDA runs start from the same numbers) with shape (N, C') and repeated
over the batch: a frame gives the same output every time, and every frame of a video shares z_T
so the output does not flicker.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engines.contracts import IMAGE_MULTIPLE, Precision
from hidiff.model import crop_image, pad_image
from runtime import frames as fr
from runtime.errors import FrameTypeError, FrameValueError, NonFiniteOutput, TilingRequired
from runtime.loop import DenoiseLoop
from runtime.selection import BACKENDS, choose, parse_device
from runtime.tiling import DEFAULT_OVERLAP, Tile, check_tile_size, plan_tiles, run_tiled

log = logging.getLogger("runtime")

DEFAULT_MAX_BATCH = 4  # frames per engine call; the default TensorRT profile's maximum batch


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


def _pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad bottom/right up to ``height x width``: reflect where the side allows, else replicate."""
    h, w = x.shape[-2:]
    ph, pw = max(0, height - h), max(0, width - w)
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _schedule_length(engines: Any, model: Any) -> int:
    """T, the number of reverse steps baked into the denoise_step graph."""
    if getattr(engines, "num_timesteps", None) is not None:
        return int(engines.num_timesteps)
    config = getattr(model, "config", None)
    if config is not None:
        return int(config.diffusion_schedule.timesteps)
    raise ValueError("cannot tell the number of diffusion steps T of these engines (the manifest has no schedule "
                     "and no model was given); export the artifacts again")


class Deblurrer:
    """Deblurs frames with HI-Diff engines kept loaded.

    ``Deblurrer(engines=None, backend="auto", device=0, precision="auto", steps=8, seed=0,
    tile=None, tile_overlap=32, max_pixels=None, max_batch=4, color="bgr", strict=False,
    model=None, cuda_graph=True, engine_options=None)``

    - ``engines``: an artifacts folder (ONNX graphs + manifest.json, TensorRT ``*.plan``), or None.
    - ``model``: a :class:`hidiff.HIDiff` or a weights path for the PyTorch backend; None with no
      ``engines`` means the embedded demo model (:func:`hidiff.default_model`).
    - ``backend``: "auto" (see :mod:`runtime.selection`) or an engines.registry name: "tensorrt",
      "onnxruntime" (-"cuda", -"trt", -"cpu"), "torch". The choice is logged once and kept in :attr:`backend` / :attr:`backend_reason`;
      ``strict=True`` raises instead of falling back.
    - ``precision``: "auto" (the artifacts' own precision; fp32 for a PyTorch model), "fp32"
      or "fp16" (artifacts of another precision are refused; the PyTorch backend casts).
    - ``steps``: must equal the model's T (the schedule is baked into the graphs).
    - ``tile``: None tiles only frames the engines cannot take whole (beyond the TensorRT
      profile or ``max_pixels``); N > 0 always tiles with N x N tiles (a multiple of 8);
      0 never tiles (such frames raise :class:`~runtime.errors.TilingRequired`).
    - ``max_pixels``: a memory budget for backends without a profile: frames with more padded
      pixels than this are tiled. None: no budget.
    - ``max_batch``: frames per engine call for batches and lists (capped by the profile).
    - ``color``: "bgr" (OpenCV, default) or "rgb": the channel order of 3/4-channel frames.

    Use :meth:`deblur` (or call the object) for frames, :meth:`stream` for videos,
    :meth:`deblur_tensor` for (B, 3, H, W) float32 RGB tensors.
    """

    def __init__(self, engines: str | Path | None = None, backend: str = "auto", device: int | str | torch.device = 0,
                 precision: str = "auto", steps: int = 8, seed: int = 0, tile: int | None = None,
                 tile_overlap: int = DEFAULT_OVERLAP, max_pixels: int | None = None,
                 max_batch: int | None = DEFAULT_MAX_BATCH, color: str = "bgr", strict: bool = False,
                 model: Any = None, cuda_graph: bool = True, engine_options: dict[str, Any] | None = None):
        # Arguments first: nothing is loaded for a call that cannot work.
        if color not in fr.COLORS:
            raise ValueError(f"color {color!r}: expected one of {list(fr.COLORS)} (OpenCV frames are 'bgr')")
        if tile is not None and tile != 0:
            check_tile_size(tile, tile_overlap)
        elif tile_overlap < 0:
            raise ValueError(f"tile_overlap {tile_overlap}: expected >= 0")
        if max_pixels is not None and max_pixels < IMAGE_MULTIPLE**2:
            raise ValueError(f"max_pixels {max_pixels}: expected None or at least {IMAGE_MULTIPLE**2}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch {max_batch}: expected None or >= 1")
        if precision != "auto":
            Precision.parse(precision)  # a bad value fails here, before anything loads
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {list(BACKENDS)}")
        self.color = color
        self.seed = int(seed)
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.max_pixels = max_pixels
        self.strict = strict
        requested = parse_device(device)
        if engines is None and model is None:
            import hidiff  # the embedded demo model; a clear FileNotFoundError until it ships

            model = hidiff.default_model()
        elif isinstance(model, (str, Path)):
            from hidiff import HIDiff

            model = HIDiff.load(model)

        options = {"cuda_graph": cuda_graph, **(engine_options or {})}
        choice = choose(backend, requested, engines, model, precision, strict, options)
        self.engines = choice.engines
        self.precision: Precision = Precision.parse(self.engines.precision)
        self.backend: str = choice.backend
        self.backend_reason: str = choice.reason
        self.device: torch.device = choice.device
        self.max_pixels_reason = "given" if max_pixels is not None else "none"
        if max_pixels is None and tile != 0:  # a default memory budget (tile=0 means never tile)
            from runtime.memory import default_max_pixels

            self.max_pixels, self.max_pixels_reason = default_max_pixels(self.device, self.precision.value)
        if choice.fell_back:
            log.warning("runtime: using %s on %s: %s", self.backend, self.device, self.backend_reason)
        else:
            log.info("runtime: using %s on %s: %s", self.backend, self.device, self.backend_reason)
        try:
            self._setup(steps, model, max_batch, cuda_graph)
        except BaseException:
            self.close()
            raise

    def _setup(self, steps: int, model: Any, max_batch: int | None, cuda_graph: bool) -> None:
        graphs = self.engines.engines
        self._le_dm, self._step, self._restormer = graphs["le_dm"], graphs["denoise_step"], graphs["restormer"]
        fixed = self._step.contract.fixed_dims
        self.prior_shape = (int(fixed["tokens"]), int(fixed["channels"]))
        self.steps = _schedule_length(self.engines, model)
        if steps != self.steps:
            raise ValueError(f"steps={steps}, but the model's schedule has T={self.steps} steps, baked into the "
                             f"denoise_step graph; pass steps={self.steps} (other step counts need another model)")
        self._decode_limits = image_limits(self._restormer)
        self._encode_limits = image_limits(self._le_dm)
        profile_batch = [b for b in (self._decode_limits.max_batch, self._encode_limits.max_batch) if b is not None]
        caps = [b for b in (max_batch, *profile_batch) if b is not None]
        self.max_batch: int | None = min(caps) if caps else None
        if self.tile and not self._decode_limits.fits(self.tile, self.tile):
            raise ValueError(f"tile={self.tile} exceeds the Restormer engine's largest input "
                             f"{self._decode_limits.max_hw}; pick a tile within it")
        if self.tile and self.tile < max(self._decode_limits.min_hw):
            raise ValueError(f"tile={self.tile} is below the Restormer engine's smallest input "
                             f"{self._decode_limits.min_hw}; pick a larger tile")
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        self.noise = torch.randn(self.prior_shape, generator=generator, dtype=torch.float32).to(self.device)
        timesteps = range(self.steps - 1, -1, -1)
        self._loop = DenoiseLoop(self._step, self.noise, timesteps, cuda_graph, self.backend)
        self._video_streams: tuple[Any, Any, Any] | None = None

    # ----------------------------------------------------------------------------------- public

    def __call__(self, frame: Any) -> Any:
        return self.deblur(frame)

    def deblur(self, frame: Any) -> Any:
        """Deblur one frame, an N x H x W x C batch, or a list of frames of any sizes.

        Returns the input's type, device, layout and dtype (see :mod:`runtime.frames`); a list
        comes back as a list in the same order. Bad input raises a DeblurError subclass (also a
        TypeError/ValueError) and leaves the Deblurrer ready for the next frame.
        """
        if isinstance(frame, (list, tuple)):
            return self._deblur_list(frame)
        spec = fr.inspect_frame(frame)
        raw = fr.as_nhwc(frame, spec).to(self.device)
        out, health = self.process_nhwc(raw, spec)
        self.check_health(health.cpu(), spec, lambda i: "frame" if spec.batch is None else f"frame {i} of the batch")
        return fr.restore(out, spec)

    def deblur_tensor(self, blur: torch.Tensor) -> torch.Tensor:
        """blur (B, 3, H, W) float32 RGB in [0, 1], any H, W, on any device ->
        sharp (B, 3, H, W) float32 in [0, 1] on blur's device."""
        if not isinstance(blur, torch.Tensor) or blur.dtype != torch.float32:
            got = type(blur).__name__ + (f" of dtype {blur.dtype}" if isinstance(blur, torch.Tensor) else "")
            raise FrameTypeError(f"deblur_tensor takes a float32 torch tensor (B, 3, H, W) in [0, 1]; got {got}")
        if blur.dim() != 4 or blur.shape[1] != 3 or blur.numel() == 0:
            raise FrameValueError(f"deblur_tensor takes (B, 3, H, W) with B, H, W >= 1; got shape {tuple(blur.shape)}")
        with torch.no_grad():
            x = blur.detach().to(self.device)
            sharp, finite = self._deblur_batches(x)
            health = torch.cat([self._input_health(x), finite[:, None]], dim=1)
        spec = fr.FrameSpec("torch", "float32", blur.shape[2], blur.shape[3], 3, blur.shape[0], True, str(blur.device))
        self.check_health(health.cpu(), spec, lambda i: f"image {i} of the batch")
        return sharp.to(blur.device)

    def stream(self, frames: Iterable[Any]) -> Iterator[Any]:
        """Deblur a sequence of frames (a video), yielding every output in order.

        On CUDA, host frames overlap upload, compute and download (pinned buffers reused per
        frame shape, separate copy and compute streams); elsewhere a plain loop. Every frame
        uses the same z_T. See :mod:`runtime.stream`.
        """
        from runtime.stream import stream_frames

        return stream_frames(self, frames)

    def video_streams(self) -> tuple[Any, Any, Any]:
        """(upload, compute, download) CUDA streams of :meth:`stream`, made once per Deblurrer:
        torch keeps a cuBLAS workspace (tens of MB) per stream that computes, so new streams per
        video would grow device memory video after video."""
        if self._video_streams is None:
            self._video_streams = (torch.cuda.Stream(self.device), torch.cuda.Stream(self.device),
                                   torch.cuda.Stream(self.device))
        return self._video_streams

    def describe(self) -> str:
        """Several lines: backend and why, device, precision, steps, loop mode, tiling, colour."""
        engines_text = self.engines.describe() if hasattr(self.engines, "describe") else repr(self.engines)
        if self.tile == 0:
            tiling = "never (tile=0: frames beyond the engines' limits raise)"
        elif self.tile:
            tiling = f"always, {self.tile} x {self.tile} tiles, overlap {self.tile_overlap}"
        else:
            limits = [f"Restormer profile max {self._decode_limits.max_hw}" if self._decode_limits.max_hw else "",
                      f"max_pixels {self.max_pixels}" if self.max_pixels else ""]
            reason = " and ".join(s for s in limits if s) or "no limit known; tile=N forces tiling"
            tiling = f"when needed ({reason}), overlap {self.tile_overlap}"
        return "\n".join([
            f"backend: {self.backend} on {self.device} ({self.backend_reason})",
            f"precision: {self.precision.value}",
            f"diffusion steps: {self.steps}, z_T seed {self.seed}, prior {self.prior_shape}",
            f"denoising loop: {self._loop.mode}",
            f"tiling: {tiling}",
            f"batch: up to {self.max_batch or 'any number of'} frames per engine call",
            f"colour order of 3/4-channel frames: {self.color}",
            f"engines: {engines_text}",
        ])

    def close(self) -> None:
        """Release the engines. Safe to call twice."""
        engines = getattr(self, "engines", None)
        if engines is not None:
            engines.close()
            self.engines = None

    def __enter__(self) -> "Deblurrer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Deblurrer(backend={self.backend!r}, device={self.device}, steps={self.steps}, seed={self.seed})"

    # ------------------------------------------------------------------ frames <-> the core

    def process_nhwc(self, raw: torch.Tensor, spec: fr.FrameSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, W, C) frames already on the device -> ((B, H, W, C) output in the frames' dtype,
        health (B, 4) float32 [input finite, input min, input max, output finite]), both on the
        device and not synchronised. :meth:`check_health` reads the health."""
        with torch.no_grad():
            blur = fr.to_model(raw, spec, self.color)
            sharp, finite = self._deblur_batches(blur)
            out = fr.from_model(sharp, raw, spec, self.color)
            health = torch.cat([self._input_health(blur), finite[:, None]], dim=1)
        return out, health

    def check_health(self, health: torch.Tensor, spec: fr.FrameSpec, name: Any) -> None:
        """Raise for the first bad frame of a (B, 4) host health tensor; ``name(i)`` names frame i."""
        for i, (finite_in, low, high, finite_out) in enumerate(health.tolist()):
            if not finite_in:
                raise FrameValueError(f"{name(i)} contains NaN or Inf ({spec.describe()}); replace them "
                                      "(e.g. np.nan_to_num) before deblurring")
            tol = fr.FLOAT_RANGE_TOLERANCE
            if spec.dtype == "float32" and (low < -tol or high > 1 + tol):
                hint = " (a 0..255 image? divide by 255)" if high > 1 + tol else ""
                raise FrameValueError(f"{name(i)} has values in [{low:.4g}, {high:.4g}]; float32 frames must be "
                                      f"in [0, 1]{hint}")
            if not finite_out:
                hint = ("an FP16 overflow is the usual cause: use precision='fp32' or FP16 engines with FP32 "
                        "normalisations" if self.precision is Precision.FP16 else "check the model's weights")
                raise NonFiniteOutput(f"{name(i)}: the {self.backend} engines produced NaN/Inf for a finite "
                                      f"input ({spec.describe()}); {hint}")

    def _deblur_list(self, frames: Sequence[Any]) -> list[Any] | tuple[Any, ...]:
        """Frames of any sizes: grouped by spec, each group run as batches, returned in order."""
        specs = [fr.inspect_frame(f, f"frame {i} of the list") for i, f in enumerate(frames)]
        for i, spec in enumerate(specs):
            if spec.batch is not None:
                raise FrameValueError(f"frame {i} of the list is a batch ({spec.describe()}); a list holds single "
                                      "frames: pass the batch array itself, or split it")
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, spec in enumerate(specs):
            groups.setdefault(spec.group_key, []).append(i)
        results: list[Any] = [None] * len(frames)
        for indices in groups.values():
            spec = specs[indices[0]]
            raw = torch.cat([fr.as_nhwc(frames[i], spec) for i in indices]).to(self.device)
            batch_spec = fr.FrameSpec(spec.kind, spec.dtype, spec.height, spec.width, spec.channels,
                                      len(indices), spec.channel_axis, spec.device)
            out, health = self.process_nhwc(raw, batch_spec)
            self.check_health(health.cpu(), spec, lambda j: f"frame {indices[j]} of the list")
            for j, i in enumerate(indices):
                results[i] = fr.restore(out[j:j + 1], spec)
        return type(frames)(results) if isinstance(frames, tuple) else results

    # ---------------------------------------------------------------------------- the core

    @staticmethod
    def _input_health(blur: torch.Tensor) -> torch.Tensor:
        flat = blur.flatten(1)
        finite = torch.isfinite(flat).all(dim=1)
        low, high = torch.aminmax(flat, dim=1)
        return torch.stack([finite.float(), low, high], dim=1)

    def _deblur_batches(self, blur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) float32 on the device -> (sharp clamped (B, 3, H, W), output finite (B,))."""
        self._plan(blur.shape[2], blur.shape[3])  # raises TilingRequired before any work is queued
        size = self.max_batch or blur.shape[0]
        if blur.shape[0] <= size:
            return self._deblur_batch(blur)
        parts = [self._deblur_batch(chunk) for chunk in blur.split(size)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _deblur_batch(self, blur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # 1. check the input: shapes were checked by the caller; values are checked on device
        #    (_input_health) and read with the result, so nothing here waits for the GPU.
        _, _, height, width = blur.shape
        # 2. pad to the multiple of 8 (reflect), then up to the engines' smallest size if needed
        x, _ = pad_image(blur)
        min_h = max(self._decode_limits.min_hw[0], self._encode_limits.min_hw[0])
        min_w = max(self._decode_limits.min_hw[1], self._encode_limits.min_hw[1])
        x = _pad_to(x, min_h, min_w)
        # 3. c = LE_DM(blur), from the whole frame
        cond = self._encode(x)
        # 4. z_0 from z_T by the T reverse steps t = T-1 .. 0
        prior = self._loop.run(cond)
        # 5. sharp = Restormer(blur, z_0), tiled when the frame is too large, every tile with this prior
        plan = self._plan(x.shape[2], x.shape[3])
        if plan is None:
            sharp = self._decode(x, prior)
        else:
            tiles, overlap = plan
            sharp = run_tiled(self._decode, x, prior, tiles, overlap)
        # 6. crop back to H x W, check, clamp to [0, 1]
        sharp = crop_image(sharp, height, width)
        finite = torch.isfinite(sharp.flatten(1)).all(dim=1)
        return sharp.clamp(0.0, 1.0), finite

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """cond (B, N, C') from the padded frame. If LE_DM's engine cannot take the frame whole,
        it sees an area-downscaled copy that fits (sides multiples of 8): the prior is pooled to
        4 x 4 tokens anyway, so a smaller copy of the same frame approximates it; a tile would not."""
        _, _, h, w = x.shape
        if not self._encode_limits.fits(h, w):
            max_h, max_w = self._encode_limits.max_hw  # type: ignore[misc]
            scale = min(max_h / h, max_w / w)
            size = (max(self._encode_limits.min_hw[0], int(h * scale) // IMAGE_MULTIPLE * IMAGE_MULTIPLE),
                    max(self._encode_limits.min_hw[1], int(w * scale) // IMAGE_MULTIPLE * IMAGE_MULTIPLE))
            x = F.interpolate(x, size=size, mode="area")
        return self._le_dm.infer({"blur": x})["cond"]

    def _decode(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return self._restormer.infer({"blur": x, "prior": prior})["sharp"]

    def _plan(self, height: int, width: int) -> tuple[list[Tile], int] | None:
        """(tiles, overlap) for a frame of this size, or None to run it whole."""
        ph, pw = -(-height // IMAGE_MULTIPLE) * IMAGE_MULTIPLE, -(-width // IMAGE_MULTIPLE) * IMAGE_MULTIPLE
        over_profile = not self._decode_limits.fits(ph, pw)
        over_budget = self.max_pixels is not None and ph * pw > self.max_pixels
        if self.tile == 0:
            if over_profile or over_budget:
                limit = (f"the Restormer engine's profile allows at most {self._decode_limits.max_hw}" if over_profile
                         else f"max_pixels is {self.max_pixels}")
                raise TilingRequired(f"a {height} x {width} frame (padded {ph} x {pw}) cannot be run whole: {limit}. "
                                     "Allow tiling (tile=None or tile=N), or resize the frame")
            return None
        if self.tile:
            tile_h = tile_w = self.tile
        elif over_profile or over_budget:
            tile_h, tile_w = self._decode_limits.max_hw or (ph, pw)
            if self.max_pixels is not None:
                side = max(IMAGE_MULTIPLE, int(math.isqrt(self.max_pixels)) // IMAGE_MULTIPLE * IMAGE_MULTIPLE)
                tile_h, tile_w = min(tile_h, side), min(tile_w, side)
        else:
            return None
        if ph <= tile_h and pw <= tile_w:
            return None
        overlap = min(self.tile_overlap, (min(tile_h, tile_w) - 1) // 2)
        return plan_tiles(ph, pw, tile_h, tile_w, overlap), overlap
