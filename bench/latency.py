"""Latency, throughput, memory and accuracy of every backend against eager PyTorch FP32, in one run.

    hidiff-bench --preset gopro --sizes 256x256,1280x720,1920x1080 --batches 1,4 --out OUT
    hidiff-bench --weights W.safetensors --engines ENGINE_DIR --backends tensorrt,torch-fp32 ...
    hidiff-bench --tiny --device cpu --sizes 32x32 --batches 1 --duration 0.2 --out OUT   # CI
    (python bench/latency.py and python -m bench.latency are the same, with the project installed)

For every backend that is present (a missing one is skipped with the reason) and every size and
batch, the runtime's pipeline (engines.pipeline) runs frame by frame on a natural image (scikit-image's
astronaut, chelsea, coffee, resized), with the same z_T for every backend:

    H2D Latency      uint8 BGR frames (B, H, W, 3), pinned host -> device
    Preprocess       BGR -> RGB, (B, 3, H, W) float32 in [0, 1], reflect-pad to multiples of 8
    LE_DM            c = LE_DM(blur)
    Denoising Steps  the T reverse steps together (z_T -> z_0)
    Restormer        sharp = Restormer(blur, z_0), in tiles where the engines need them
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

On a GPU every case must fit the free memory, estimated per case from its padded pixels, the
Restormer's width and eager FP32's bytes per pixel (the reference runs every case); a case that
cannot fit is skipped and named with the figures (``--no-memory-check`` runs it anyway). On an
integrated GPU (Jetson) the free figure is the system's available memory, the device-wide
memory growth is not reported (cudaMemGetInfo counts system memory there), and the report
records the power mode, clocks and a tegrastats sample.

Results go to ``--out`` only: ``latency.json`` (validated against
``bench/schema/latency.schema.json``), ``latency.md``, ``latency.png``; the table is printed last.
Exit codes: 0 at least one case measured, 1 nothing could be measured, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench.backends import (
    BENCH_BACKENDS,
    DEFAULT_BACKENDS,
    REFERENCE,
    BenchBackend,
    artifact_precision,
    device_used_bytes,
    free_device_memory,
    memory_figures,
    open_bench_backend,
    unavailable_reason,
)
from bench.inputs import (
    NATURAL_IMAGES,
    ImageSize,
    ModelChoice,
    add_model_arguments,
    input_description,
    load_model,
    model_choice_from_args,
    natural_frames,
)
from bench.report import describe_environment, write_atomic
from bench.timing import StageTimer, case_metrics, compare_outputs, time_case
from engines.base import BackendUnavailable, EngineError
from engines.contracts import DENOISE_STEP, LE_DM, RESTORMER
from engines.pipeline import Pipeline
from engines.version import version_text
from hidiff.model import HIDiff

SCHEMA_PATH = Path(__file__).resolve().with_name("schema") / "latency.schema.json"
PROG = "hidiff-bench"

# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


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
    packages_dir: Path | None = None  # AOTInductor packages (default: engines_dir)
    tf32: bool = False
    cuda_graph: bool = True
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    memory_check: bool = True  # skip the cases that cannot fit the free device memory
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
        specific = self.plans_dir if backend.is_tensorrt else self.packages_dir if backend.is_aoti else self.onnx_dir
        return specific if specific is not None else self.engines_dir

# --------------------------------------------------------------------------------------------
# The grid: which cases fit the device
# --------------------------------------------------------------------------------------------

# Peak torch memory of eager inference (weights included) per padded pixel of a batch, per
# channel of the Restormer's first level (``network_g.dim``). From the project's H100 runs of
# this benchmark: eager FP32 7,150 B/px with dim 48 (the GoPro release; 54,940 MiB at 1920x1080
# batch 4) and 3,600 with dim 24 (the demonstration model); FP16 3,460 and 1,760.
BYTES_PER_PIXEL_PER_DIM = {"fp32": 150.0, "fp16": 75.0}
MEMORY_MARGIN_BYTES = 1 << 30  # CUDA context, cuDNN workspaces, allocator slack
USABLE_FRACTION = 0.9  # of the free memory: other processes and fragmentation take the rest
GIB = float(1 << 30)


def estimated_peak_bytes(size: ImageSize, batch: int, precision: str, dim: int) -> int:
    """Peak device memory of one case of eager inference in ``precision``, from its padded pixels."""
    height, width = size.padded
    return int(batch * height * width * dim * BYTES_PER_PIXEL_PER_DIM[precision]) + MEMORY_MARGIN_BYTES


def available_device_memory(device: torch.device) -> tuple[int, str]:
    """Bytes a run can use on ``device`` and where the figure comes from.

    On an integrated GPU the GPU allocates system memory and cudaMemGetInfo leaves out what
    the kernel can reclaim (page cache, swap), so /proc/meminfo's MemAvailable is the figure."""
    if torch.cuda.get_device_properties(device).is_integrated:
        available = _mem_available()
        if available is not None:
            return available, "MemAvailable (/proc/meminfo; integrated GPU)"
    free, _ = torch.cuda.mem_get_info(device)
    return int(free), "cudaMemGetInfo free"


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def fit_cases(cases: Sequence[tuple[ImageSize, int]], dim: int, available: int,
              source: str) -> tuple[list[tuple[ImageSize, int]], list[dict[str, Any]]]:
    """The cases whose eager FP32 reference fits ``USABLE_FRACTION`` of ``available`` bytes, and
    a skip record (size, batch, reason with the figures) for each of the others."""
    budget = available * USABLE_FRACTION
    kept, skipped = [], []
    for size, batch in cases:
        need = estimated_peak_bytes(size, batch, "fp32", dim)
        if need <= budget:
            kept.append((size, batch))
            continue
        skipped.append({"backend": "*", "size": size.label, "batch": batch, "reason": (
            f"{size.label} batch {batch} needs about {need / GIB:.1f} GiB for the eager FP32 reference "
            f"({BYTES_PER_PIXEL_PER_DIM['fp32']:g} B per padded pixel per channel x dim {dim}), "
            f"{available / GIB:.1f} GiB available ({source}); smaller --sizes/--batches fit, "
            "--no-memory-check runs it anyway")})
    return kept, skipped

# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


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
            runnable.append(Column(backend, artifacts, artifact_precision(backend, artifacts, settings.device)))
        else:
            skipped.append({"backend": name, "reason": reason})
            say(f"skip {name}: {reason}")

    cases = [(size, batch) for size in settings.sizes for batch in settings.batches]
    if device.type == "cuda" and settings.memory_check:
        cases, too_large = fit_cases(cases, model.config.network_g.dim, *available_device_memory(device))
        for item in too_large:
            skipped.append(item)
            say(f"skip {item['size']} batch {item['batch']}: {item['reason']}")
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
                                            cuda_graphs=settings.cuda_graph)
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
            pipeline = StageTimer(Pipeline(engine_set.engines, noise, len(timesteps), backend=engine_set.backend,
                                           cuda_graphs=settings.cuda_graph))
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


def _measure(column: Column, pipeline: StageTimer, size: ImageSize, batch: int, frames: np.ndarray,
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
        prog=PROG,
        description="Latency, throughput, memory and accuracy of every backend against eager PyTorch FP32.",
    )
    parser.add_argument("--version", action="version", version=version_text(PROG))
    parser.add_argument("--sizes", default=None,
                        help="WIDTHxHEIGHT list (default 256x256,1280x720,1920x1080 on a GPU, 256x256 on the CPU)")
    parser.add_argument("--batches", default=None, help="batch sizes (default 1,4 on a GPU, 1 on the CPU)")
    parser.add_argument("--backends", default=None,
                        help=f"from {', '.join(BENCH_BACKENDS)} (default: {DEFAULT_BACKENDS['cuda']} on a GPU, "
                             f"{DEFAULT_BACKENDS['cpu']} on the CPU); {REFERENCE} is always added as the reference; "
                             "torch-compile-fp16 compiles (with autotuning) for minutes per shape")
    parser.add_argument("--engines", type=Path, default=None,
                        help="artifacts folder (ONNX export, TensorRT plans, AOTInductor packages) for the tensorrt, "
                             "onnxruntime and aoti backends")
    parser.add_argument("--onnx", type=Path, default=None, help="ONNX export folder for onnxruntime-* (default: --engines)")
    parser.add_argument("--plans", type=Path, default=None, help="TensorRT plans folder for tensorrt (default: --engines)")
    parser.add_argument("--packages", type=Path, default=None,
                        help="AOTInductor packages folder for aoti (default: --engines)")
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
    parser.add_argument("--no-memory-check", action="store_true",
                        help="run the cases estimated not to fit the free device memory too (default: skip them)")
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
        packages_dir=args.packages,
        tf32=args.tf32,
        cuda_graph=not args.no_cuda_graph,
        threads=args.threads,
        memory_check=not args.no_memory_check,
        command=command,
    )
    return settings, model_choice_from_args(args)


def main(argv: Sequence[str] | None = None) -> int:
    from bench import report as report_io

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    try:
        settings, choice = settings_from_args(args, shlex.join([PROG, *argv]))
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
