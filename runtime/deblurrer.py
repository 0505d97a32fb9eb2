"""The Deblurrer: engines loaded once, frames in, frames out.

Frames of any supported type (:mod:`runtime.frames`) are converted to (B, 3, H, W) float32 RGB on
the engines' device, checked, split into batches the engines take, and run through
:class:`engines.pipeline.Pipeline` (pad, LE_DM, the T denoising steps, Restormer tiled when
needed, crop); the output is clamped to [0, 1], checked and converted back to the input's type.
Values are checked on the device and read with the result, so nothing waits for the GPU early.

z_T is drawn once from ``torch.Generator().manual_seed(seed)`` (on the CPU, so CPU and CUDA runs
start from the same numbers) with shape (N, C') and shared by every batch row: a frame gives the
same output every time, and every frame of a video shares z_T so the output does not flicker.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from engines.contracts import Precision
from engines.pipeline import FrameTooLarge, Pipeline
from engines.tiling import DEFAULT_OVERLAP, Tiling
from engines.torch_settings import TorchSettings
from runtime import frames as fr
from runtime.errors import FrameTypeError, FrameValueError, NonFiniteOutput, TilingRequired
from runtime.selection import BACKENDS, choose, parse_device

log = logging.getLogger("runtime")

DEFAULT_MAX_BATCH = 4  # frames per engine call; the default TensorRT profile's maximum batch


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
    model=None, torch_settings=None, cuda_graphs=True, engine_options=None)``

    - ``engines``: an artifacts folder (ONNX graphs + manifest.json, TensorRT ``*.plan``), or None.
    - ``model``: a :class:`hidiff.HIDiff` or a weights path for the PyTorch backend; None with no
      ``engines`` means the embedded demo model (:func:`hidiff.default_model`).
    - ``backend``: "auto" (see :mod:`runtime.selection`) or an engines.registry name: "tensorrt",
      "onnxruntime" (-"cuda", -"trt", -"cpu"), "torch". The choice is logged once and kept in
      :attr:`backend` / :attr:`backend_reason`; ``strict=True`` raises instead of falling back.
    - ``precision``: "auto" (the artifacts' own precision; for a PyTorch model fp16 on a CUDA
      device, fp32 on the CPU), "fp32" or "fp16" (artifacts of another precision are refused;
      the PyTorch backend casts).
    - ``torch_settings``: how the PyTorch backend runs the model, a
      :class:`~engines.torch_settings.TorchSettings` or a preset's name ("eager", "channels-last",
      "compiled", "fastest"). None: the fastest form on a CUDA device in fp16 (compiled: the
      first frame of each size compiles for minutes), the eager model on the CPU
      (:func:`~engines.torch_settings.default_settings`). Other backends ignore it.
    - ``cuda_graphs``: the T denoising steps replayed as CUDA graphs (one per batch size) where
      the backend allows; ONNX Runtime's CUDA provider replays its denoising step as a graph of
      its own instead. Each PyTorch engine's own graphs per image size are
      ``torch_settings.cuda_graphs``.
    - ``steps``: must equal the model's T (the schedule is baked into the graphs).
    - ``tile``: None tiles only frames the engines cannot take whole (beyond the TensorRT
      profile or ``max_pixels``); N > 0 always tiles with N x N tiles (a multiple of 8);
      0 never tiles (such frames raise :class:`~runtime.errors.TilingRequired`).
    - ``max_pixels``: a memory budget for backends without a profile: frames with more padded
      pixels than this are tiled. None: no budget.
    - ``max_batch``: frames per engine call for batches and lists (capped by the profile).
    - ``color``: "bgr" (OpenCV, default) or "rgb": the channel order of 3/4-channel frames.
    - ``engine_options``: further options of the backend (ONNX Runtime: ``provider``,
      ``provider_options``, ...; see :func:`engines.registry.open_engines`).

    Use :meth:`deblur` (or call the object) for frames, :meth:`stream` for videos,
    :meth:`deblur_tensor` for (B, 3, H, W) float32 RGB tensors.
    """

    def __init__(self, engines: str | Path | None = None, backend: str = "auto", device: int | str | torch.device = 0,
                 precision: str = "auto", steps: int = 8, seed: int = 0, tile: int | None = None,
                 tile_overlap: int = DEFAULT_OVERLAP, max_pixels: int | None = None,
                 max_batch: int | None = DEFAULT_MAX_BATCH, color: str = "bgr", strict: bool = False,
                 model: Any = None, torch_settings: TorchSettings | str | None = None, cuda_graphs: bool = True,
                 engine_options: dict[str, Any] | None = None):
        # Arguments first: nothing is loaded for a call that cannot work.
        if color not in fr.COLORS:
            raise ValueError(f"color {color!r}: expected one of {list(fr.COLORS)} (OpenCV frames are 'bgr')")
        self.tiling = Tiling(tile, tile_overlap, max_pixels)
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch {max_batch}: expected None or >= 1")
        if precision != "auto":
            Precision.parse(precision)  # a bad value fails here, before anything loads
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {list(BACKENDS)}")
        if isinstance(torch_settings, str):
            torch_settings = TorchSettings.preset(torch_settings)
        elif torch_settings is not None and not isinstance(torch_settings, TorchSettings):
            raise TypeError(f"torch_settings must be a TorchSettings, a preset's name or None; "
                            f"got {type(torch_settings).__name__}")
        clashing = sorted({"cuda_graphs", "settings"} & set(engine_options or {}))
        if clashing:
            raise ValueError(f"engine_options {clashing}: pass Deblurrer(cuda_graphs=...) for the denoising loop and "
                             "torch_settings=... for the PyTorch engines instead")
        self.color = color
        self.seed = int(seed)
        self.strict = strict
        requested = parse_device(device)
        if engines is None and model is None:
            import hidiff  # the embedded demo model; a clear FileNotFoundError until it ships

            model = hidiff.default_model()
        elif isinstance(model, (str, Path)):
            from hidiff import HIDiff

            model = HIDiff.load(model)

        options = {"cuda_graphs": cuda_graphs, **(engine_options or {})}
        choice = choose(backend, requested, engines, model, precision, strict, options, torch_settings)
        self.engines = choice.engines
        self.precision: Precision = Precision.parse(self.engines.precision)
        self.backend: str = choice.backend
        self.backend_reason: str = choice.reason
        self.device: torch.device = choice.device
        self.max_pixels_reason = "given" if max_pixels is not None else "none"
        if max_pixels is None and tile != 0:  # a default memory budget (tile=0 means never tile)
            from runtime.memory import default_max_pixels

            budget, self.max_pixels_reason = default_max_pixels(self.device, self.precision.value)
            self.tiling = dataclasses.replace(self.tiling, max_pixels=budget)
        if choice.fell_back:
            log.warning("runtime: using %s on %s: %s", self.backend, self.device, self.backend_reason)
        else:
            log.info("runtime: using %s on %s: %s", self.backend, self.device, self.backend_reason)
        try:
            self._setup(steps, model, max_batch, cuda_graphs)
        except BaseException:
            self.close()
            raise

    def _setup(self, steps: int, model: Any, max_batch: int | None, cuda_graphs: bool) -> None:
        self.steps = _schedule_length(self.engines, model)
        if steps != self.steps:
            raise ValueError(f"steps={steps}, but the model's schedule has T={self.steps} steps, baked into the "
                             f"denoise_step graph; pass steps={self.steps} (other step counts need another model)")
        tokens, channels = self.engines.prior_shape
        self.prior_shape = (int(tokens), int(channels))
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        self.noise = torch.randn(self.prior_shape, generator=generator, dtype=torch.float32).to(self.device)
        # What the PyTorch engines run (the same object for all three); None for other backends.
        self.torch_settings: TorchSettings | None = getattr(self.engines.engines["le_dm"], "settings", None)
        self.pipeline = Pipeline(self.engines.engines, self.noise, self.steps, backend=self.backend,
                                 cuda_graphs=cuda_graphs, tiling=self.tiling)
        caps = [b for b in (max_batch, self.pipeline.max_batch) if b is not None]
        self.max_batch: int | None = min(caps) if caps else None
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
        lines = [
            f"backend: {self.backend} on {self.device} ({self.backend_reason})",
            f"precision: {self.precision.value}",
        ]
        if self.torch_settings is not None:
            lines.append(f"PyTorch settings: {self.torch_settings.describe()}")
        return "\n".join(lines + [
            f"diffusion steps: {self.steps}, z_T seed {self.seed}, prior {self.prior_shape}",
            f"denoising loop: {self.pipeline.loop.mode}",
            f"tiling: {self.pipeline.describe_tiling()}; memory budget: {self.max_pixels_reason}",
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
        try:
            self.pipeline.plan(blur.shape[2], blur.shape[3])  # before any work is queued
        except FrameTooLarge as exc:
            raise TilingRequired(str(exc)) from exc
        size = self.max_batch or blur.shape[0]
        parts = [self._deblur_batch(chunk) for chunk in blur.split(size)]
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _deblur_batch(self, blur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Input values are checked on the device (_input_health) and read with the result.
        sharp = self.pipeline.run(blur)
        finite = torch.isfinite(sharp.flatten(1)).all(dim=1)
        return sharp.clamp(0.0, 1.0), finite
