"""Timing one benchmark case: the inference pipeline (:class:`engines.pipeline.Pipeline`, with its
padding and tiling) over three engines, a clock mark at each of its stages through its hooks
(CUDA events on the GPU, perf_counter on the CPU), the cold call, warm-up and timed loop, and the
statistics trtexec reports."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from bench.backends import MIB, REFERENCE
from engines.pipeline import Pipeline

if TYPE_CHECKING:
    from bench.latency import LatencySettings

# Stages in pipeline order; each is the span between two consecutive clock marks.
STAGES = ("H2D Latency", "Preprocess", "LE_DM", "Denoising Steps", "Restormer", "Postprocess", "D2H Latency")
NETWORK_STAGES = ("LE_DM", "Denoising Steps", "Restormer")
METRICS = ("Host Latency", "GPU Compute Time", "Enqueue Time", "Wall Latency") + STAGES
STAT_KEYS = ("mean", "median", "p90", "p95", "p99", "min", "max")


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
# The timed frames
# --------------------------------------------------------------------------------------------

# The pipeline's stages that end a benchmark stage; its crop is part of "Postprocess".
MARKED_STAGES = {"pad": "Preprocess", "le_dm": "LE_DM", "denoising_steps": "Denoising Steps", "restormer": "Restormer"}


@dataclass
class IterationTimes:
    stages: list[float]  # ms, in STAGES order
    enqueue_ms: float
    wall_ms: float


class StageTimer:
    """One case's frames through ``pipeline``, a clock mark at each stage of :data:`STAGES`.

    Around the pipeline, what the runtime does with uint8 frames: fixed pinned host input and
    output (B, H, W, 3) uint8 BGR and a device input per case, the upload, BGR uint8 -> RGB
    float32 in [0, 1] before the pipeline, and clamp, uint8 BGR and the download after it.
    """

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.device = pipeline.device
        self.clock: StageClock = CudaEventClock(self.device) if self.device.type == "cuda" else PerfCounterClock()

    @property
    def loop(self) -> Any:
        """The pipeline's denoising loop (its ``mode`` says whether CUDA graphs replay it)."""
        return self.pipeline.loop

    def prepare(self, frames: np.ndarray) -> None:
        """frames (B, H, W, 3) uint8 BGR."""
        pinned = self.device.type == "cuda"
        host = torch.from_numpy(np.ascontiguousarray(frames))
        self.host_in = host.pin_memory() if pinned else host.clone()
        self.host_out = torch.empty_like(self.host_in, pin_memory=pinned)
        self.device_in = torch.empty(self.host_in.shape, dtype=torch.uint8, device=self.device)

    def release(self) -> None:
        for name in ("host_in", "host_out", "device_in"):
            self.__dict__.pop(name, None)

    def _on_stage(self, stage: str) -> None:
        if stage in MARKED_STAGES:
            self.clock.mark()

    @torch.no_grad()
    def run_once(self) -> tuple[torch.Tensor, IterationTimes]:
        """One iteration; returns the (B, 3, H, W) float32 output in [0, 1] and its times."""
        clock = self.clock
        t0 = time.perf_counter()
        clock.start()
        self.device_in.copy_(self.host_in, non_blocking=True)
        clock.mark()  # H2D
        blur = self.device_in.permute(0, 3, 1, 2).flip(1).float().div_(255.0).contiguous()
        sharp = self.pipeline.run(blur, on_stage=self._on_stage)  # marks Preprocess .. Restormer
        image = sharp.clamp(0.0, 1.0)
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


def time_case(pipeline: StageTimer, settings: LatencySettings) -> CaseRun:
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
