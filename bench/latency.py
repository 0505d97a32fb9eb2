"""Latency, throughput, memory and accuracy of every backend against eager PyTorch FP32, in one run.

    python bench/latency.py --preset gopro --sizes 256x256,1280x720,1920x1080 --batches 1,4 --out OUT
    python bench/latency.py --weights W.safetensors --engines ENGINE_DIR --backends tensorrt,torch-fp32 ...
    python bench/latency.py --tiny --device cpu --sizes 32x32 --batches 1 --duration 0.2 --out OUT   # CI

For every backend that is present (a missing one is skipped with the reason) and every size and
batch, the frame-by-frame pipeline of the runtime runs on a natural image (scikit-image's
astronaut, chelsea, coffee, resized), with the same z_T for every backend:

    H2D Latency      uint8 BGR frames (B, H, W, 3), pinned host -> device
    Preprocess       BGR -> RGB, (B, 3, H, W) float32 in [0, 1], reflect-pad to multiples of 8
    LE_DM            c = LE_DM(blur)
    Denoising Steps  the T reverse steps together (z_T -> z_0)
    Restormer        sharp = Restormer(blur, z_0)
    Postprocess      crop, clamp, uint8 BGR (B, H, W, 3)
    D2H Latency      device -> pinned host

Each case runs one cold call (reported apart: first-call set-up, torch.compile's compilation),
a time-based warm-up (trtexec's 200 ms), then timed iterations for ``--duration`` seconds and at
least ``--min-iters`` iterations. Stages are timed with CUDA events on the GPU and
``time.perf_counter`` on the CPU. Metric names follow trtexec: "Host Latency" is H2D to D2H on
the device timeline, "GPU Compute Time" the three networks, "Enqueue Time" the host time to issue
one iteration, "Throughput" frames per second of wall time with one iteration in flight.
Every case is compared with eager FP32 (``torch-fp32``, always run first as the reference):
speed-up of the median Host Latency, PSNR and max abs error of the [0, 1] output.

Results go to ``--out`` only: ``latency.json`` (validated against
``bench/schema/latency.schema.json``), ``latency.md``, ``latency.png``; the table is printed last.
Exit codes: 0 at least one case measured, 1 nothing could be measured, 2 bad arguments.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as ``python bench/latency.py`` from a checkout that is not pip-installed: make the
    # repository's packages (hidiff, engines, runtime, bench) importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from typing import Any, Protocol  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.report import describe_environment, write_atomic  # noqa: E402
from engines.base import BackendUnavailable, Engine, EngineError  # noqa: E402
from engines.contracts import DENOISE_STEP, LE_DM, RESTORMER, pad_to_multiple  # noqa: E402
from hidiff.config import DenoiserConfig, EncoderConfig, HIDiffConfig, RestormerConfig, preset  # noqa: E402
from hidiff.model import HIDiff, crop_image, pad_image  # noqa: E402

SCHEMA_PATH = Path(__file__).resolve().with_name("schema") / "latency.schema.json"

# Stages in pipeline order; each is the span between two consecutive clock marks.
STAGES = ("H2D Latency", "Preprocess", "LE_DM", "Denoising Steps", "Restormer", "Postprocess", "D2H Latency")
NETWORK_STAGES = ("LE_DM", "Denoising Steps", "Restormer")
METRICS = ("Host Latency", "GPU Compute Time", "Enqueue Time", "Wall Latency") + STAGES
STAT_KEYS = ("mean", "median", "p90", "p95", "p99", "min", "max")
NATURAL_IMAGES = ("astronaut", "chelsea", "coffee")
REFERENCE = "torch-fp32"
MIB = 1024.0 * 1024.0


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSize:
    """A frame size as video people write it: ``WxH`` (``1280x720`` is 720 rows of 1280 pixels)."""

    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> "ImageSize":
        parts = text.lower().strip().split("x")
        try:
            width, height = (int(p) for p in parts)
        except ValueError as exc:
            raise ValueError(f"size {text!r}: expected WIDTHxHEIGHT such as 1280x720") from exc
        if width < 1 or height < 1:
            raise ValueError(f"size {text!r}: width and height must be positive")
        return cls(width, height)

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def padded(self) -> tuple[int, int]:
        """(height, width) the engines receive: each side reflect-padded up to a multiple of 8."""
        return pad_to_multiple(self.height), pad_to_multiple(self.width)


@dataclass(frozen=True)
class BenchBackend:
    """One column of the benchmark: a backend of :mod:`engines.registry` at one precision.

    ``engine_backend`` is the registry's key; ``needs_artifacts``: it runs exported ONNX graphs
    (``--onnx`` / ``--engines``) or TensorRT plans (``--plans`` / ``--engines``) rather than the
    PyTorch model, and its precision is then the artifacts' own (``precision`` is the usual one).
    """

    name: str
    engine_backend: str
    precision: str
    devices: tuple[str, ...]
    needs_artifacts: bool = False
    options: tuple[tuple[str, Any], ...] = ()  # open_engines keyword arguments

    @property
    def is_tensorrt(self) -> bool:
        return self.engine_backend == "tensorrt"

    def runtime_backend(self) -> tuple[str, dict[str, Any]]:
        """The same engines through :class:`runtime.Deblurrer`: its ``backend`` and ``engine_options``
        (the runtime names ONNX Runtime once and takes the provider as an option)."""
        options = dict(self.options)
        if self.engine_backend.startswith("onnxruntime-"):
            provider = self.engine_backend.split("-", 1)[1]
            return "onnxruntime", {"provider": "tensorrt" if provider == "trt" else provider, **options}
        return self.engine_backend, options


# torch.compile's mode for torch-compile-fp16: inductor's default (about a minute per shape);
# max-autotune spent more than 400 s on the first 256x256 shape alone on an H100 (torch 2.11).
COMPILE_MODE = "default"

# The small table that drives everything; the names are what --backends takes.
BENCH_BACKENDS: dict[str, BenchBackend] = {
    b.name: b
    for b in (
        BenchBackend("tensorrt", "tensorrt", "fp16", ("cuda",), needs_artifacts=True),
        BenchBackend("onnxruntime-trt", "onnxruntime-trt", "fp16", ("cuda",), needs_artifacts=True),
        BenchBackend("onnxruntime-cuda", "onnxruntime-cuda", "fp16", ("cuda",), needs_artifacts=True),
        # The CUDA provider with its NHWC kernels (ONNX Runtime converts the NCHW graph's layout).
        BenchBackend("onnxruntime-cuda-nhwc", "onnxruntime-cuda", "fp16", ("cuda",), needs_artifacts=True,
                     options=(("provider_options", {"prefer_nhwc": "1"}),)),
        BenchBackend("onnxruntime-cpu", "onnxruntime-cpu", "fp32", ("cpu",), needs_artifacts=True),
        BenchBackend("torch-compile-fp16", "torch", "fp16", ("cuda",),
                     options=(("compile", COMPILE_MODE), ("channels_last", True))),
        # Without hidiff.aligned_channels' zero padding (the form before it, for before/after runs).
        BenchBackend("torch-compile-fp16-unaligned", "torch", "fp16", ("cuda",),
                     options=(("compile", COMPILE_MODE), ("channels_last", True), ("align_channels", False))),
        # With engines.triton_gated_dwconv's fused GDFN gate (less memory; slower compiled, session 4).
        BenchBackend("torch-compile-fp16-fused", "torch", "fp16", ("cuda",),
                     options=(("compile", COMPILE_MODE), ("channels_last", True), ("fuse_gates", True))),
        BenchBackend("torch-fp16-nhwc", "torch", "fp16", ("cuda",), options=(("channels_last", True),)),
        BenchBackend("torch-fp16-nhwc-fused", "torch", "fp16", ("cuda",),
                     options=(("channels_last", True), ("fuse_gates", True))),
        BenchBackend("torch-fp16-nhwc-unaligned", "torch", "fp16", ("cuda",),
                     options=(("channels_last", True), ("align_channels", False))),
        # The baselines: the eager model as a user runs it (.half() / float32, default memory layout).
        BenchBackend("torch-fp16", "torch", "fp16", ("cuda",),
                     options=(("channels_last", False), ("align_channels", False))),
        BenchBackend("torch-fp32", "torch", "fp32", ("cpu", "cuda"), options=(("channels_last", False),)),
    )
}
# torch-compile-fp16 is not a default: it compiles again for every new shape.
DEFAULT_BACKENDS = {
    "cuda": "tensorrt,onnxruntime-cuda,torch-fp16-nhwc,torch-fp16,torch-fp32",
    "cpu": "onnxruntime-cpu,torch-fp32",
}


@dataclass(frozen=True)
class LatencySettings:
    """What one benchmark run measures. ``backends`` always starts with the reference."""

    sizes: tuple[ImageSize, ...]
    batches: tuple[int, ...]
    backends: tuple[str, ...]
    device: str = "cpu"
    warmup_ms: float = 200.0
    duration_s: float = 3.0
    min_iters: int = 10
    max_case_s: float = 60.0  # stop a case's timed loop here even short of min_iters (at least 2 iterations)
    seed: int = 0
    input_image: str = "astronaut"
    engines_dir: Path | None = None  # artifacts for every backend that reads them
    onnx_dir: Path | None = None  # ONNX export for onnxruntime-* (default: engines_dir)
    plans_dir: Path | None = None  # TensorRT plans (default: engines_dir)
    tf32: bool = False
    cuda_graph: bool = True
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    command: str = ""

    def __post_init__(self) -> None:
        if not self.sizes or not self.batches or not self.backends:
            raise ValueError("at least one size, one batch and one backend are needed")
        if any(b < 1 for b in self.batches):
            raise ValueError(f"batches {self.batches}: each must be >= 1")
        unknown = [b for b in self.backends if b not in BENCH_BACKENDS]
        if unknown:
            raise ValueError(f"unknown backends {unknown}; choose from {', '.join(BENCH_BACKENDS)}")
        if self.backends[0] != REFERENCE:
            raise ValueError(f"the reference {REFERENCE} must run first (got {list(self.backends)})")
        if self.warmup_ms < 0 or self.duration_s <= 0 or self.min_iters < 1:
            raise ValueError(
                f"warm-up {self.warmup_ms} ms, duration {self.duration_s} s, min iterations {self.min_iters}: "
                "need warm-up >= 0, duration > 0 and at least 1 iteration"
            )
        if self.max_case_s < self.duration_s:
            raise ValueError(f"max case time {self.max_case_s} s is below the duration {self.duration_s} s")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads {self.threads}: expected >= 1")
        if self.input_image not in NATURAL_IMAGES:
            raise ValueError(f"input image {self.input_image!r}; choose from {NATURAL_IMAGES}")

    @property
    def is_cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"

    @property
    def timer(self) -> str:
        return "cuda-events" if self.is_cuda else "perf_counter"

    def artifacts_for(self, backend: BenchBackend) -> Path | None:
        """The folder ``backend`` reads (None for the PyTorch backends, or when none was given)."""
        if not backend.needs_artifacts:
            return None
        specific = self.plans_dir if backend.is_tensorrt else self.onnx_dir
        return specific if specific is not None else self.engines_dir


# --------------------------------------------------------------------------------------------
# Model and input
# --------------------------------------------------------------------------------------------


def tiny_config() -> HIDiffConfig:
    """A HI-Diff of 250 thousand parameters (prior (B, 16, 32)) that runs in milliseconds: CI and smoke runs."""
    return HIDiffConfig(
        network_g=RestormerConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2), embed_dim=8),
        network_le=EncoderConfig(in_chans=6, embed_dim=8, block_num=1),
        network_le_dm=EncoderConfig(embed_dim=8, block_num=1),
        network_d=DenoiserConfig(in_channel=32, out_channel=32, inner_channel=32, block_num=3),
    )


@dataclass(frozen=True)
class ModelChoice:
    """Where the model comes from: our weights file, the official release files (``net_g``,
    ``net_le_dm``, ``net_d``, optional ``options``), random weights of a release's architecture
    (``preset``) or of :func:`tiny_config` (``tiny``); nothing: the embedded default model."""

    weights: Path | None = None
    net_g: Path | None = None
    net_le_dm: Path | None = None
    net_d: Path | None = None
    options: Path | None = None
    preset: str | None = None
    tiny: bool = False

    def __post_init__(self) -> None:
        files = [f for f in ("weights", "net_g", "net_le_dm", "net_d", "options") if getattr(self, f) is not None]
        random = [flag for flag, on in (("--preset", self.preset is not None), ("--tiny", self.tiny)) if on]
        if len(random) > 1 or (random and files):
            given = random + [f"--{f.replace('_', '-')}" for f in files]
            raise ValueError(f"choose one model source; got {' '.join(given)}")

    @property
    def is_default(self) -> bool:
        return self == ModelChoice()


def load_model(choice: ModelChoice, seed: int) -> tuple[HIDiff, str]:
    """The model (float32, eval, on the CPU) and a one-line description of where it came from.

    Files go through :class:`export.model_source.ModelSource`, as in the export command (same
    flags, same errors). Random weights (``preset``, ``tiny``) are drawn from ``seed`` so two runs
    time the same network.
    """
    if choice.preset is not None or choice.tiny:
        config = tiny_config() if choice.tiny else preset(choice.preset or "gopro")
        with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's RNG
            torch.manual_seed(seed)
            model = HIDiff(config).eval()
        name = "tiny" if choice.tiny else f"preset {choice.preset}"
        return model, f"{name}, random weights (seed {seed})"
    from export.model_source import ModelSource

    source = ModelSource.from_options(choice.net_g, choice.net_le_dm, choice.net_d, choice.options, choice.weights)
    described = {
        "official": f"official net_g {choice.net_g}, net_le_dm {choice.net_le_dm}, net_d {choice.net_d}",
        "weights": f"weights {choice.weights}",
    }.get(source.kind, "embedded default model (hidiff.default_model())")
    return source.load(), described


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model flags shared with bench/accuracy.py (the export command's, plus random weights)."""
    group = parser.add_argument_group("model (default: the embedded model, hidiff.default_model())")
    group.add_argument("--weights", type=Path, default=None, help="our safetensors checkpoint (HIDiff.save)")
    group.add_argument("--net-g", type=Path, default=None, help="official net_g.pth (with --net-le-dm and --net-d)")
    group.add_argument("--net-le-dm", type=Path, default=None, help="official net_le_dm.pth")
    group.add_argument("--net-d", type=Path, default=None, help="official net_d.pth")
    group.add_argument("--options", type=Path, default=None, help="official option file (YAML) for the --net-* files")
    group.add_argument("--preset", default=None, help="random weights of a release's architecture: gopro, realblur_j, ...")
    group.add_argument("--tiny", action="store_true", help="a tiny random model (tests, smoke runs)")


def model_choice_from_args(args: argparse.Namespace) -> ModelChoice:
    return ModelChoice(weights=args.weights, net_g=args.net_g, net_le_dm=args.net_le_dm, net_d=args.net_d,
                       options=args.options, preset=args.preset, tiny=args.tiny)


def natural_frames(size: ImageSize, batch: int, first: str = "astronaut") -> np.ndarray:
    """(batch, H, W, 3) uint8 BGR frames of natural images, as OpenCV would deliver them.

    Natural content, not noise, so FP16 error figures mean what they would on real frames.
    Frames cycle through astronaut, chelsea and coffee starting at ``first`` (scikit-image's
    bundled images); without scikit-image, a drawn scene stands in (see :func:`input_description`).
    """
    order = NATURAL_IMAGES[NATURAL_IMAGES.index(first):] + NATURAL_IMAGES[:NATURAL_IMAGES.index(first)]
    frames = []
    for i in range(batch):
        rgb = _source_image(order[i % len(order)])
        # INTER_AREA to shrink, cubic to enlarge: neither adds aliasing that a natural frame lacks.
        shrink = size.width * size.height < rgb.shape[0] * rgb.shape[1]
        resized = cv2.resize(rgb, (size.width, size.height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        frames.append(cv2.cvtColor(resized, cv2.COLOR_RGB2BGR))
    return np.stack(frames)


def input_description(first: str) -> str:
    if importlib.util.find_spec("skimage") is None:
        return "drawn scenes (scikit-image is not installed: pip install scikit-image for its natural images)"
    return ",".join(NATURAL_IMAGES) + f" (skimage.data, first: {first})"


def _source_image(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB: scikit-image's image ``name``, or a drawn scene seeded by the name."""
    try:
        from skimage import data as skimage_data
    except ImportError:
        return _drawn_scene(512, 512, seed=NATURAL_IMAGES.index(name))
    return np.asarray(getattr(skimage_data, name)())


def _drawn_scene(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth shading, hard-edged shapes and fine texture: the mix of flat areas, edges and
    detail a photograph has (not white noise, which no deblurring network sees)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    image = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        image[..., c] = 0.5 + 0.3 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    for _ in range(12):
        colour = tuple(float(v) for v in rng.uniform(0, 1, 3))
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.circle(image, (x0, y0), int(rng.integers(8, max(9, width // 6))), colour, -1, lineType=cv2.LINE_AA)
        else:
            x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
    image += 0.04 * cv2.GaussianBlur(rng.standard_normal((height, width, 3)).astype(np.float32), (0, 0), 1.0)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Statistics and clocks
# --------------------------------------------------------------------------------------------


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """mean, median, p90, p95, p99, min, max of per-iteration times (ms), percentiles by linear
    interpolation (numpy's default), so min <= median <= p90 <= p95 <= p99 <= max."""
    if len(samples_ms) == 0:
        raise ValueError("no samples to summarize")
    values = np.asarray(samples_ms, dtype=np.float64)
    median, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99])
    return {
        "mean": float(values.mean()),
        "median": float(median),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "min": float(values.min()),
        "max": float(values.max()),
    }


class StageClock(Protocol):
    """Marks the boundaries of the pipeline's stages within one iteration."""

    def start(self) -> None: ...

    def mark(self) -> None: ...

    def synchronize(self) -> None: ...

    def stage_ms(self) -> list[float]: ...


class CudaEventClock:
    """CUDA events on the current stream: device-timeline spans, unaffected by host jitter.

    The events are reused: every iteration synchronises before the next one records again.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(len(STAGES) + 1)]
        self._next = 0

    def start(self) -> None:
        self._next = 0
        self.mark()

    def mark(self) -> None:
        self.events[self._next].record()
        self._next += 1

    def synchronize(self) -> None:
        # The whole device, not just the event: TensorRT and ONNX Runtime may use streams of their own.
        torch.cuda.synchronize(self.device)

    def stage_ms(self) -> list[float]:
        if self._next != len(self.events):
            raise RuntimeError(f"{self._next - 1} stages marked, {len(STAGES)} expected")
        return [a.elapsed_time(b) for a, b in zip(self.events[:-1], self.events[1:])]


class PerfCounterClock:
    """Host time: CPU backends run synchronously, so a stage ends when its call returns."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def start(self) -> None:
        self.times = [time.perf_counter()]

    def mark(self) -> None:
        self.times.append(time.perf_counter())

    def synchronize(self) -> None:
        pass

    def stage_ms(self) -> list[float]:
        if len(self.times) != len(STAGES) + 1:
            raise RuntimeError(f"{len(self.times) - 1} stages marked, {len(STAGES)} expected")
        return [(b - a) * 1e3 for a, b in zip(self.times[:-1], self.times[1:])]


# --------------------------------------------------------------------------------------------
# The instrumented pipeline
# --------------------------------------------------------------------------------------------


@dataclass
class IterationTimes:
    stages: list[float]  # ms, in STAGES order
    enqueue_ms: float
    wall_ms: float


class InstrumentedPipeline:
    """The runtime's frame pipeline over three engines, with a clock mark between stages.

    The same parts as :class:`runtime.Deblurrer`: reflect padding (``hidiff.model.pad_image``),
    the runtime's :class:`~runtime.loop.DenoiseLoop` (one CUDA graph per batch size where the
    backend allows) and z_T of shape (N, C') shared by every frame of a batch. Fixed buffers per
    case: pinned host input and output frames (B, H, W, 3) uint8 BGR and the device input.
    """

    def __init__(self, engines: Mapping[str, Engine], noise: torch.Tensor, timesteps: Sequence[int],
                 device: torch.device, backend: str, cuda_graph: bool = True):
        """``noise``: z_T (N, C') float32; ``backend``: the engine backend's registry name."""
        from runtime.loop import DenoiseLoop

        missing = [g for g in (LE_DM, DENOISE_STEP, RESTORMER) if g not in engines]
        if missing:
            raise EngineError(f"the engine set lacks graphs {missing}; it has {sorted(engines)}")
        self.le_dm = engines[LE_DM]
        self.restormer = engines[RESTORMER]
        self.device = device
        self.loop = DenoiseLoop(engines[DENOISE_STEP], noise.to(device, torch.float32), timesteps, cuda_graph, backend)
        self.clock: StageClock = CudaEventClock(device) if device.type == "cuda" else PerfCounterClock()

    def prepare(self, frames: np.ndarray) -> None:
        """frames (B, H, W, 3) uint8 BGR."""
        pinned = self.device.type == "cuda"
        host = torch.from_numpy(np.ascontiguousarray(frames))
        self.host_in = host.pin_memory() if pinned else host.clone()
        self.host_out = torch.empty_like(self.host_in, pin_memory=pinned)
        self.device_in = torch.empty(self.host_in.shape, dtype=torch.uint8, device=self.device)
        self.height, self.width = frames.shape[1:3]

    def release(self) -> None:
        for name in ("host_in", "host_out", "device_in"):
            self.__dict__.pop(name, None)

    @torch.no_grad()
    def run_once(self) -> tuple[torch.Tensor, IterationTimes]:
        """One iteration; returns the (B, 3, H, W) float32 output in [0, 1] and its times."""
        clock = self.clock
        t0 = time.perf_counter()
        clock.start()
        self.device_in.copy_(self.host_in, non_blocking=True)
        clock.mark()  # H2D
        blur, _ = pad_image(self.device_in.permute(0, 3, 1, 2).flip(1).float().div_(255.0))
        blur = blur.contiguous()
        clock.mark()  # preprocess
        cond = self.le_dm.infer({"blur": blur})["cond"]
        clock.mark()  # LE_DM
        z = self.loop.run(cond)
        clock.mark()  # denoising steps
        sharp = self.restormer.infer({"blur": blur, "prior": z})["sharp"]
        clock.mark()  # Restormer
        image = crop_image(sharp, self.height, self.width).clamp(0.0, 1.0)
        frames_out = image.mul(255.0).round_().to(torch.uint8).flip(1).permute(0, 2, 3, 1).contiguous()
        clock.mark()  # postprocess
        self.host_out.copy_(frames_out, non_blocking=True)
        clock.mark()  # D2H
        enqueue = time.perf_counter() - t0
        clock.synchronize()
        wall = time.perf_counter() - t0
        return image, IterationTimes(clock.stage_ms(), enqueue * 1e3, wall * 1e3)


# --------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------


@dataclass
class CaseRun:
    """What one (backend, size, batch) produced before it is compared with the reference."""

    times: list[IterationTimes]
    warmup_iterations: int
    timed_s: float
    cold_ms: float
    output: torch.Tensor  # last timed output, (B, 3, H, W) float32 on the CPU
    cold_output: torch.Tensor
    cold_peak_mb: float | None  # torch's peak allocation during the first call (CUDA only)


def time_case(pipeline: InstrumentedPipeline, settings: LatencySettings) -> CaseRun:
    """Cold call, time-based warm-up, then timed iterations: at least ``duration_s`` and
    ``min_iters``, unless ``max_case_s`` runs out first (slow cases, such as eager FP32 at
    1920x1080 batch 4, then stop after 2 or more iterations so a run fits a time limit)."""
    cold_output, cold = pipeline.run_once()
    cold_output = cold_output.float().cpu()
    cold_peak = None
    if pipeline.device.type == "cuda":
        # The first call's peak (lazy cuDNN set-up, graph capture, compilation) apart from the
        # steady state's, which memory_figures reads after the timed loop.
        cold_peak = torch.cuda.max_memory_allocated(pipeline.device) / MIB
        torch.cuda.reset_peak_memory_stats(pipeline.device)
    warmup_iterations = 0
    start = time.perf_counter()
    while (time.perf_counter() - start) * 1e3 < settings.warmup_ms:
        pipeline.run_once()
        warmup_iterations += 1
    times: list[IterationTimes] = []
    start = time.perf_counter()
    while True:
        output, sample = pipeline.run_once()
        times.append(sample)
        elapsed = time.perf_counter() - start
        if elapsed >= settings.duration_s and len(times) >= settings.min_iters:
            break
        if elapsed >= settings.max_case_s and len(times) >= 2:
            break
    return CaseRun(times, warmup_iterations, elapsed, cold.wall_ms, output.float().cpu(), cold_output, cold_peak)


def case_metrics(times: Sequence[IterationTimes]) -> dict[str, dict[str, float]]:
    """Per-metric statistics of the timed iterations (names as in :data:`METRICS`)."""
    per_stage = {name: [t.stages[i] for t in times] for i, name in enumerate(STAGES)}
    metrics = {name: summarize(values) for name, values in per_stage.items()}
    metrics["Host Latency"] = summarize([sum(t.stages) for t in times])
    metrics["GPU Compute Time"] = summarize([sum(t.stages[STAGES.index(s)] for s in NETWORK_STAGES) for t in times])
    metrics["Enqueue Time"] = summarize([t.enqueue_ms for t in times])
    metrics["Wall Latency"] = summarize([t.wall_ms for t in times])
    return {name: metrics[name] for name in METRICS}


def compare_outputs(output: torch.Tensor, reference: torch.Tensor, reference_name: str = REFERENCE) -> dict[str, Any]:
    """PSNR (dB) and max abs error of a [0, 1] output against the reference's; PSNR is None
    when the two are identical (infinite)."""
    if output.shape != reference.shape:
        raise ValueError(f"output shape {tuple(output.shape)} differs from the reference's {tuple(reference.shape)}")
    diff = output.double() - reference.double()
    max_abs = float(diff.abs().max())
    mse = float(diff.square().mean())
    psnr = None if mse == 0.0 else 10.0 * math.log10(1.0 / mse)
    return {"reference": reference_name, "psnr_db": psnr, "max_abs_error": max_abs, "exact": mse == 0.0}


# --------------------------------------------------------------------------------------------
# Backends and memory
# --------------------------------------------------------------------------------------------


def unavailable_reason(backend: BenchBackend, device: str, artifacts: Path | None) -> str | None:
    """Why ``backend`` cannot run on ``device`` with ``artifacts`` (None: it can), from the
    registry's :func:`~engines.registry.available_backends` (library, provider, GPU, files)."""
    from engines.registry import available_backends

    device_type = torch.device(device).type
    if device_type not in backend.devices:
        return f"runs on {' or '.join(backend.devices)}, this run is on {device}"
    if backend.needs_artifacts and artifacts is None:
        what, flag = ("TensorRT plans", "--plans") if backend.is_tensorrt else ("exported ONNX graphs", "--onnx")
        return f"needs {what}: pass {flag} DIR or --engines DIR"
    present = available_backends(device, artifacts=artifacts)
    if backend.engine_backend not in present:
        return f"engine backend {backend.engine_backend!r} is not in engines.registry"
    return present[backend.engine_backend]


def artifact_precision(backend: BenchBackend, artifacts: Path | None) -> str:
    """The precision the artifacts were exported or built in (their manifest's ``precision``);
    the backend's usual one for the PyTorch backends or when no manifest says."""
    if artifacts is None:
        return backend.precision
    manifests = ([plan_manifest(artifacts, LE_DM)] if backend.is_tensorrt else []) + [artifacts / "manifest.json"]
    for path in manifests:
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("precision")
        except (OSError, ValueError, AttributeError):
            continue
        if value in ("fp32", "fp16"):
            return str(value)
    return backend.precision


def plan_manifest(plans_dir: Path, graph: str) -> Path:
    """``plans_dir/graph.plan.json``, where engines/plan.py keeps a plan's manifest."""
    from engines.plan import manifest_path, plan_path_for

    return manifest_path(plan_path_for(plans_dir, graph))


def open_bench_backend(backend: BenchBackend, model: HIDiff | None, device: str, artifacts: Path | None,
                       precision: str, cuda_graph: bool = True) -> Any:
    """The registry's EngineSet for ``backend``. Torch backends get their own copy of the model,
    so a backend that casts or compiles it cannot change what the next one runs."""
    from engines.registry import open_engines

    if backend.needs_artifacts:
        source: dict[str, Any] = {"artifacts": artifacts}
    else:
        if model is None:
            raise ValueError(f"backend {backend.name} runs the PyTorch model: pass --weights, --net-g/--net-le-dm/--net-d "
                             "or --preset")
        source = {"model": copy.deepcopy(model)}
    return open_engines(backend.engine_backend, device=device, precision=precision, strict=True,
                        cuda_graph=cuda_graph, **source, **dict(backend.options))


def device_used_bytes(device: torch.device) -> int | None:
    """Used memory of the whole device (cudaMemGetInfo): sees TensorRT and ONNX Runtime too."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return int(total - free)


def memory_figures(backend: BenchBackend, device: torch.device, used_before: int | None,
                   cold_peak_mb: float | None) -> dict[str, Any]:
    """Memory of one case, read after its timed loop: torch's steady-state peaks (after the
    first call), the first call's peak, and the device-wide growth since the engines opened."""
    if device.type != "cuda":
        return {
            "torch_max_allocated_mb": None,
            "torch_max_reserved_mb": None,
            "cold_torch_max_allocated_mb": None,
            "device_used_delta_mb": None,
            "note": "CPU run: device memory is not measured",
        }
    used_now = device_used_bytes(device)
    delta = None if used_before is None or used_now is None else (used_now - used_before) / MIB
    if backend.engine_backend.startswith("torch"):
        note = ("torch peaks include the weights (steady state after the first call; the first call's apart); "
                "device_used_delta is cudaMemGetInfo after the timed loop minus before the engines were opened "
                "(device-wide: torch's cache and other processes count too)")
    else:
        note = (f"{backend.engine_backend} allocates its weights and workspaces outside torch: the torch peaks "
                "count only the I/O and pre/post-processing tensors; device_used_delta (cudaMemGetInfo, device-wide) "
                "includes the engines")
    return {
        "torch_max_allocated_mb": torch.cuda.max_memory_allocated(device) / MIB,
        "torch_max_reserved_mb": torch.cuda.max_memory_reserved(device) / MIB,
        "cold_torch_max_allocated_mb": cold_peak_mb,
        "device_used_delta_mb": delta,
        "note": note,
    }


def free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def trtexec_lines(engines_dir: Path, size: ImageSize, batch: int, prior_shape: tuple[int, int],
                  settings: LatencySettings, t_file: Path) -> list[str]:
    """trtexec commands that time each plan alone at this case's shapes, for cross-checking.

    ``t_file`` holds the int64 schedule index 0 so the denoising step reads a valid ``t``.
    """
    from engines.plan import plan_path_for

    height, width = size.padded
    n, c = prior_shape
    image = f"{batch}x3x{height}x{width}"
    prior = f"{batch}x{n}x{c}"
    shapes = {
        LE_DM: f"blur:{image}",
        DENOISE_STEP: f"z:{prior},cond:{prior},t:1",
        RESTORMER: f"blur:{image},prior:{prior}",
    }
    timing = f"--warmUp={settings.warmup_ms:g} --duration={max(1, math.ceil(settings.duration_s))} --iterations={settings.min_iters}"
    lines = []
    for graph, shape in shapes.items():
        extra = f" --loadInputs=t:{t_file}" if graph == DENOISE_STEP else ""
        plan = plan_path_for(engines_dir, graph)
        lines.append(f"trtexec --loadEngine={shlex.quote(str(plan))} --shapes={shape}{extra} {timing}")
    return lines


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A backend resolved for this run: the folder it reads and the precision it runs in."""

    backend: BenchBackend
    artifacts: Path | None
    precision: str


def model_mismatch(engine_set: Any, model: HIDiff, artifacts: Path | None) -> str | None:
    """Why the artifacts cannot be compared with ``model`` (None: they can): another prior shape,
    another schedule length, or another configuration in the export manifest. Accuracy against
    the reference means something only when both run the same network."""
    if artifacts is None:
        return None
    where = f"the artifacts in {artifacts}"
    if tuple(engine_set.prior_shape) != tuple(model.prior_shape):
        return f"{where} have prior {tuple(engine_set.prior_shape)}, the model {tuple(model.prior_shape)}: another model"
    steps = engine_set.num_timesteps
    if steps is not None and steps != model.schedule.num_timesteps:
        return f"{where} have T={steps} diffusion steps, the model {model.schedule.num_timesteps}: another model"
    manifest = engine_set.manifest or {}
    exported = (manifest.get("model") or {}).get("config")
    if exported is not None and exported != json.loads(json.dumps(model.config.to_dict())):
        return f"{where} were exported from another configuration than the model's; pass the weights they came from"
    return None


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500]


def run_benchmark(settings: LatencySettings, model: HIDiff, model_source: str, out_dir: Path,
                  log: Callable[[str], None] | None = None,
                  on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure every backend at every size and batch; returns the report (the JSON's content).

    ``on_update(report)`` is called after every case with the report so far (the CLI writes it,
    so a run cut short by a time limit keeps what it measured). ``out_dir`` receives only the
    helper file trtexec's cross-check reads (``trtexec_t.bin``).
    """
    say = log or (lambda message: tqdm.write(message, file=sys.stderr))
    with _torch_settings(settings):
        return _run(settings, model, model_source, out_dir, say, on_update)


@contextlib.contextmanager
def _torch_settings(settings: LatencySettings) -> Iterator[None]:
    """TF32 off (unless asked) and the CPU thread count for the run; restored afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_num_threads())
    # The reference is true FP32: TF32 would make "eager FP32" a different baseline on Ampere+.
    torch.backends.cuda.matmul.allow_tf32 = settings.tf32
    torch.backends.cudnn.allow_tf32 = settings.tf32
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[0], saved[1]
        torch.set_num_threads(saved[2])


def _run(settings: LatencySettings, model: HIDiff, model_source: str, out_dir: Path,
         say: Callable[[str], None], on_update: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    device = torch.device(settings.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    prior_shape = model.prior_shape
    timesteps = list(model.schedule.timesteps())

    skipped: list[dict[str, str]] = []
    runnable: list[Column] = []
    for name in settings.backends:
        backend = BENCH_BACKENDS[name]
        artifacts = settings.artifacts_for(backend)
        reason = unavailable_reason(backend, settings.device, artifacts)
        if reason is None:
            runnable.append(Column(backend, artifacts, artifact_precision(backend, artifacts)))
        else:
            skipped.append({"backend": name, "reason": reason})
            say(f"skip {name}: {reason}")

    cases = [(size, batch) for size in settings.sizes for batch in settings.batches]
    # z_T as the runtime draws it: (N, C') from a CPU generator, shared by every frame of a batch.
    noise = torch.randn(prior_shape, generator=torch.Generator(device="cpu").manual_seed(settings.seed))
    frames = {(size, batch): natural_frames(size, batch, settings.input_image) for size, batch in cases}
    reference: dict[tuple[ImageSize, int], tuple[torch.Tensor, float]] = {}
    results: list[dict[str, Any]] = []
    t_file = out_dir / "trtexec_t.bin"
    report = _report_skeleton(settings, model, model_source, skipped, results)

    progress = tqdm(total=len(runnable) * len(cases), desc="latency", unit="case", file=sys.stderr)
    for column in runnable:
        name = column.backend.name
        free_device_memory(device)
        used_before = device_used_bytes(device)
        try:
            engine_set = open_bench_backend(column.backend, model, settings.device, column.artifacts, column.precision,
                                            settings.cuda_graph)
        except (BackendUnavailable, EngineError, OSError, ValueError, TypeError, RuntimeError) as exc:
            skipped.append({"backend": name, "reason": f"could not open its engines: {_short_error(exc)}"})
            say(f"skip {name}: {_short_error(exc)}")
            progress.update(len(cases))
            continue
        mismatch = model_mismatch(engine_set, model, column.artifacts)
        if mismatch is not None:
            engine_set.close()
            skipped.append({"backend": name, "reason": mismatch})
            say(f"skip {name}: {mismatch}")
            progress.update(len(cases))
            continue
        try:
            pipeline = InstrumentedPipeline(engine_set.engines, noise, timesteps, device, engine_set.backend,
                                            settings.cuda_graph)
            for size, batch in cases:
                result = _measure(column, pipeline, size, batch, frames[(size, batch)],
                                  settings, used_before, reference, prior_shape, t_file)
                results.append(result)
                progress.update(1)
                say(_one_line(result))
                if on_update is not None:
                    on_update(report)
        finally:
            engine_set.close()
            del engine_set
            free_device_memory(device)
    progress.close()
    report["complete"] = True
    if on_update is not None:
        on_update(report)
    return report


def _report_skeleton(settings: LatencySettings, model: HIDiff, model_source: str, skipped: list[dict[str, str]],
                     results: list[dict[str, Any]]) -> dict[str, Any]:
    """The report with ``skipped`` and ``results`` as live lists the run appends to."""
    prior_shape = model.prior_shape
    timesteps = list(model.schedule.timesteps())
    return {
        "schema_version": 1,
        "tool": "bench/latency.py",
        "complete": False,  # True once every case has run; a file cut short by a time limit says False
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": describe_environment(settings.device),
        "settings": {
            "sizes": [s.label for s in settings.sizes],
            "batches": list(settings.batches),
            "backends": list(settings.backends),
            "reference": REFERENCE,
            "device": settings.device,
            "warmup_ms": settings.warmup_ms,
            "duration_s": settings.duration_s,
            "min_iters": settings.min_iters,
            "max_case_s": settings.max_case_s,
            "seed": settings.seed,
            "timer": settings.timer,
            "tf32": settings.tf32,
            "cuda_graph": settings.cuda_graph,
            "threads": torch.get_num_threads(),
            "input_image": input_description(settings.input_image),
            "engines_dir": str(settings.engines_dir) if settings.engines_dir is not None else None,
            "onnx_dir": str(settings.onnx_dir) if settings.onnx_dir is not None else None,
            "plans_dir": str(settings.plans_dir) if settings.plans_dir is not None else None,
            "command": settings.command,
            "model": {
                "source": model_source,
                "parameters": model.num_parameters(),
                "prior_shape": list(prior_shape),
                "timesteps": len(timesteps),
            },
        },
        "skipped": skipped,
        "results": results,
    }


def _measure(column: Column, pipeline: InstrumentedPipeline, size: ImageSize, batch: int, frames: np.ndarray,
             settings: LatencySettings, used_before: int | None,
             reference: dict[tuple[ImageSize, int], tuple[torch.Tensor, float]],
             prior_shape: tuple[int, int], t_file: Path) -> dict[str, Any]:
    backend, device = column.backend, pipeline.device
    padded_height, padded_width = size.padded
    result: dict[str, Any] = {
        "backend": backend.name,
        "engine_backend": backend.engine_backend,
        "precision": column.precision,
        "width": size.width,
        "height": size.height,
        "padded_height": padded_height,
        "padded_width": padded_width,
        "batch": batch,
        "status": "ok",
        "error": None,
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        pipeline.prepare(frames)
        run = time_case(pipeline, settings)
        memory = memory_figures(backend, device, used_before, run.cold_peak_mb)
    except (EngineError, RuntimeError, ValueError, TypeError, KeyError) as exc:
        # One case failing (out of memory at 1080p batch 4, a shape outside a TensorRT profile)
        # must not lose the others: record it and go on.
        result.update(status="failed", error=_short_error(exc))
    pipeline.release()
    if result["status"] == "failed":
        # Outside the except block: its traceback no longer pins the failed iteration's tensors.
        free_device_memory(device)
        return result
    metrics = case_metrics(run.times)
    host_median = metrics["Host Latency"]["median"]
    key = (size, batch)
    if backend.name == REFERENCE:
        reference[key] = (run.cold_output, host_median)
    ref = reference.get(key)
    result.update(
        iterations=len(run.times),
        warmup_iterations=run.warmup_iterations,
        timed_s=run.timed_s,
        cold_ms=run.cold_ms,
        metrics=metrics,
        throughput_fps=batch * len(run.times) / run.timed_s,
        memory=memory,
        speedup_vs_reference=None if ref is None or host_median <= 0 else ref[1] / host_median,
        accuracy=None if ref is None else compare_outputs(run.output, ref[0]),
        denoise_loop=pipeline.loop.mode,
    )
    if backend.is_tensorrt and column.artifacts is not None:
        if not t_file.exists():
            write_atomic(t_file, np.zeros(1, dtype=np.int64).tobytes())
        result["trtexec"] = trtexec_lines(column.artifacts, size, batch, prior_shape, settings, t_file)
    return result


def _one_line(result: Mapping[str, Any]) -> str:
    where = f"[{result['backend']}] {result['width']}x{result['height']} b{result['batch']}"
    if result["status"] != "ok":
        return f"{where}: FAILED {result['error']}"
    host = result["metrics"]["Host Latency"]
    return (f"{where}: median {host['median']:.2f} ms, p90 {host['p90']:.2f} ms, "
            f"{result['throughput_fps']:.1f} frames/s ({result['iterations']} iterations)")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(
        prog="python bench/latency.py",
        description="Latency, throughput, memory and accuracy of every backend against eager PyTorch FP32.",
    )
    parser.add_argument("--sizes", default=None,
                        help="WIDTHxHEIGHT list (default 256x256,1280x720,1920x1080 on a GPU, 256x256 on the CPU)")
    parser.add_argument("--batches", default=None, help="batch sizes (default 1,4 on a GPU, 1 on the CPU)")
    parser.add_argument("--backends", default=None,
                        help=f"from {', '.join(BENCH_BACKENDS)} (default: {DEFAULT_BACKENDS['cuda']} on a GPU, "
                             f"{DEFAULT_BACKENDS['cpu']} on the CPU); {REFERENCE} is always added as the reference; "
                             "torch-compile-fp16 compiles (with autotuning) for minutes per shape")
    parser.add_argument("--engines", type=Path, default=None,
                        help="artifacts folder (ONNX export and/or TensorRT plans) for the tensorrt and onnxruntime backends")
    parser.add_argument("--onnx", type=Path, default=None, help="ONNX export folder for onnxruntime-* (default: --engines)")
    parser.add_argument("--plans", type=Path, default=None, help="TensorRT plans folder for tensorrt (default: --engines)")
    add_model_arguments(parser)
    parser.add_argument("--device", default="cuda:0" if cuda else "cpu", help="cuda:N or cpu (default: %(default)s)")
    parser.add_argument("--warmup-ms", type=float, default=200.0, help="warm-up per case, ms (trtexec's default 200)")
    parser.add_argument("--duration", type=float, default=3.0, help="timed seconds per case (default 3)")
    parser.add_argument("--min-iters", type=int, default=10, help="at least this many timed iterations (default 10)")
    parser.add_argument("--max-case-s", type=float, default=60.0,
                        help="cap on one case's timed loop, even below --min-iters (at least 2 iterations; default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of z_T and of random weights")
    parser.add_argument("--image", default="astronaut", choices=NATURAL_IMAGES, help="first input image of a batch")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 in the FP32 backends (default: true FP32)")
    parser.add_argument("--no-cuda-graph", action="store_true",
                        help="run the denoising steps as T plain calls (default: one CUDA graph, as the runtime does)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder (default: %(default)s)")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace, command: str) -> tuple[LatencySettings, ModelChoice]:
    device_type = torch.device(args.device).type
    sizes_text = args.sizes or ("256x256,1280x720,1920x1080" if device_type == "cuda" else "256x256")
    batches_text = args.batches or ("1,4" if device_type == "cuda" else "1")
    backends_text = args.backends or DEFAULT_BACKENDS.get(device_type, DEFAULT_BACKENDS["cpu"])
    try:
        batches = tuple(int(b) for b in batches_text.split(",") if b.strip())
    except ValueError as exc:
        raise ValueError(f"--batches {batches_text!r}: expected integers such as 1,4") from exc
    requested = [b.strip() for b in backends_text.split(",") if b.strip()]
    backends = (REFERENCE, *dict.fromkeys(b for b in requested if b != REFERENCE))
    settings = LatencySettings(
        sizes=tuple(ImageSize.parse(s) for s in sizes_text.split(",") if s.strip()),
        batches=batches,
        backends=backends,
        device=args.device,
        warmup_ms=args.warmup_ms,
        duration_s=args.duration,
        min_iters=args.min_iters,
        max_case_s=args.max_case_s,
        seed=args.seed,
        input_image=args.image,
        engines_dir=args.engines,
        onnx_dir=args.onnx,
        plans_dir=args.plans,
        tf32=args.tf32,
        cuda_graph=not args.no_cuda_graph,
        threads=args.threads,
        command=command,
    )
    return settings, model_choice_from_args(args)


def main(argv: Sequence[str] | None = None) -> int:
    from bench import report as report_io

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    try:
        settings, choice = settings_from_args(args, shlex.join(["python", "bench/latency.py", *argv]))
        if settings.is_cuda and not torch.cuda.is_available():
            raise ValueError(f"--device {settings.device}: no CUDA GPU is visible; use --device cpu")
        model, model_source = load_model(choice, settings.seed)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    warnings: set[str] = set()

    def warn_once(message: str) -> None:
        if message not in warnings:
            warnings.add(message)
            print(f"warning: {message}", file=sys.stderr)

    def write_so_far(partial: dict[str, Any]) -> None:
        report_io.write_report(partial, args.out, warn=warn_once)

    report = run_benchmark(settings, model, model_source, args.out, on_update=write_so_far)
    paths = report_io.write_report(report, args.out, warn=warn_once)
    for line in report_io.trtexec_section(report):
        print(line)
    for name, path in paths.items():
        print(f"{name}: {path}", file=sys.stderr)
    print(report_io.format_table(report))
    return 0 if any(r["status"] == "ok" for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
