"""The runtime's GPU acceptance figures, measured in one run (issue 6):

    python bench/runtime_checks.py --preset gopro --device cuda:0 --out OUT [--onnx DIR] [--soak-frames 10000]

1. overhead   ``Deblurrer.deblur(frame)`` end to end at 1280x720, batch 1 (uint8 BGR frame in host
              memory -> uint8 BGR frame in host memory, wall clock) against the sum of its
              engines' GPU times (LE_DM, the T denoising steps, Restormer; CUDA events), both
              measured in this run on the same frame: the runtime should add at most 5 %.
2. loop       the T denoising steps replayed as one CUDA graph (CUDA events, median).
3. 4k         a 3840x2160 frame through tiling with a pixel budget: peak memory PyTorch allocated
              (and the device's used memory, which also sees ONNX Runtime's) and the
              difference between the tiled and the untiled output.
4. soak       ``Deblurrer.stream()`` over N synthetic frames: every frame returned, and the host's
              resident memory and the device's used memory after the warm-up against the end.

Backends: the PyTorch FP16 backend (eager, channels-last) always; ONNX Runtime CUDA as well when
``--onnx`` names an fp16 export and the CUDA execution provider loads. Results:
``OUT/runtime_checks.json`` and a table on stdout. Exit status 0 when every check ran (pass or fail is in the report), 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.inputs import ImageSize, add_model_arguments, load_model, model_choice_from_args, natural_frames
from hidiff.files import write_atomic
from hidiff.metrics import psnr

OVERHEAD_LIMIT = 0.05  # the runtime may add 5 % to its engines' GPU time
LOOP_LIMIT_MS = 1.0
TILING_LIMIT_GB = 8.0
SOAK_GROWTH_LIMIT = 0.01
GIB = 1024**3


def _median_ms(run: Callable[[], Any], device: torch.device, iterations: int) -> float:
    """Median over ``iterations`` of one call, timed with CUDA events around it."""
    times = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _device_used_bytes() -> int:
    free, total = torch.cuda.mem_get_info()
    return total - free


def _host_rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


def _device_input(deblurrer: Any, frame: np.ndarray) -> torch.Tensor:
    """``frame`` (uint8 BGR) as the Deblurrer's pipeline receives it: (1, 3, H, W) RGB float on the device."""
    from runtime import frames as fr

    raw = fr.as_nhwc(frame, fr.inspect_frame(frame)).to(deblurrer.device)
    return raw.permute(0, 3, 1, 2).float().div(255.0).flip(1).contiguous()  # BGR uint8 -> RGB float


def _stage_ms(deblurrer: Any, blur: torch.Tensor, iterations: int) -> dict[str, float]:
    """Median GPU time of each stage of the Deblurrer's pipeline on ``blur``: CUDA events recorded
    through the pipeline's stage hook, one run per iteration."""
    pipeline = deblurrer.pipeline
    times: dict[str, list[float]] = {}
    for _ in range(iterations):
        events = [("start", torch.cuda.Event(enable_timing=True))]
        events[0][1].record()

        def mark(stage: str) -> None:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            events.append((stage, event))

        pipeline.run(blur, on_stage=mark)
        events[-1][1].synchronize()
        for (_, begin), (stage, end) in zip(events[:-1], events[1:]):
            times.setdefault(stage, []).append(begin.elapsed_time(end))
    return {stage: statistics.median(values) for stage, values in times.items()}


def check_overhead(deblurrer: Any, frame: np.ndarray, iterations: int) -> dict[str, Any]:
    """deblur() wall time against the sum of the engines' GPU times, same frame, same run."""
    device = deblurrer.device
    for _ in range(3):
        deblurrer.deblur(frame)  # warm-up: CUDA graph capture, cuDNN plans, allocator
    walls = []
    for _ in range(iterations):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        deblurrer.deblur(frame)  # returns a host array: the result was waited for
        walls.append((time.perf_counter() - start) * 1e3)

    # The pipeline's engine stages on device-resident input, between CUDA events.
    stage_ms = _stage_ms(deblurrer, _device_input(deblurrer, frame), iterations)
    stages = {name: stage_ms[name] for name in ("le_dm", "denoising_steps", "restormer")}
    engines_ms = sum(stages.values())
    wall_ms = statistics.median(walls)
    overhead = wall_ms / engines_ms - 1.0
    return {"size": f"{frame.shape[1]}x{frame.shape[0]}", "iterations": iterations, "deblur_wall_ms": wall_ms,
            "engine_gpu_ms": stages, "engine_gpu_sum_ms": engines_ms, "overhead": overhead,
            "loop_mode": deblurrer.pipeline.loop.mode, "pass": overhead <= OVERHEAD_LIMIT}


def check_loop(deblurrer: Any, frame: np.ndarray, iterations: int) -> dict[str, Any]:
    """The T denoising steps alone (the pipeline's loop on LE_DM's condition), CUDA events around them."""
    from engines.contracts import pad_to_multiple
    from engines.pipeline import pad_bottom_right

    loop = deblurrer.pipeline.loop
    blur = _device_input(deblurrer, frame)
    x = pad_bottom_right(blur, pad_to_multiple(blur.shape[2]), pad_to_multiple(blur.shape[3]))
    cond = deblurrer.pipeline.le_dm.infer({"blur": x})["cond"]
    loop.run(cond)  # capture
    loop_ms = _median_ms(lambda: loop.run(cond), deblurrer.device, iterations)
    return {"steps": deblurrer.steps, "mode": loop.mode, "median_ms": loop_ms,
            "pass": loop.graph_error is None and loop_ms <= LOOP_LIMIT_MS}


def check_4k_tiling(make: Callable[..., Any], max_pixels: int) -> dict[str, Any]:
    """A 3840x2160 frame with a pixel budget (tiles), then without (whole frame), on one device."""
    frame = natural_frames(ImageSize(3840, 2160), 1)[0]
    result: dict[str, Any] = {"size": "3840x2160", "max_pixels": max_pixels}
    outputs = {}
    for name, budget in (("tiled", max_pixels), ("whole", None)):
        torch.cuda.empty_cache()
        with make(max_pixels=budget) as deblurrer:
            deblurrer.deblur(frame[:64, :64])  # load and warm on a small frame
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            used_before = _device_used_bytes()
            try:
                outputs[name] = deblurrer.deblur(frame)
            except torch.cuda.OutOfMemoryError as exc:
                result[name] = {"error": f"out of memory: {str(exc).splitlines()[0]}"}
                continue
            torch.cuda.synchronize()
            result[name] = {"torch_peak_allocated_gb": torch.cuda.max_memory_allocated() / GIB,
                            "device_used_after_gb": _device_used_bytes() / GIB,
                            "device_used_before_gb": used_before / GIB}
        torch.cuda.empty_cache()
    if "tiled" in outputs and "whole" in outputs:
        a, b = outputs["tiled"].astype(np.int16), outputs["whole"].astype(np.int16)
        result["tiled_vs_whole"] = {"psnr_db": psnr(outputs["tiled"], outputs["whole"]),
                                    "max_abs_diff_8bit": int(np.abs(a - b).max()),
                                    "mean_abs_diff_8bit": float(np.abs(a - b).mean())}
    tiled = result.get("tiled", {})
    result["pass"] = "torch_peak_allocated_gb" in tiled and tiled["torch_peak_allocated_gb"] <= TILING_LIMIT_GB
    return result


def check_soak(deblurrer: Any, frames: int, size: ImageSize, warmup: int) -> dict[str, Any]:
    """``stream()`` over ``frames`` synthetic frames; memory after ``warmup`` frames against the end."""
    rng = np.random.default_rng(0)
    base = natural_frames(size, 3)

    def source() -> Any:
        for i in range(frames):
            frame = base[i % len(base)].copy()
            frame[0, :, :] = rng.integers(0, 256, size=frame.shape[1:], dtype=np.uint8)  # each frame differs
            yield frame

    returned = 0
    marks: dict[str, dict[str, float]] = {}
    first_out = None
    start = time.perf_counter()
    for out in deblurrer.stream(source()):
        if first_out is None:
            first_out = out
        if out.shape != (size.height, size.width, 3) or out.dtype != np.uint8:
            raise AssertionError(f"frame {returned}: got {out.shape} {out.dtype}")
        returned += 1
        if returned in (warmup, frames):
            torch.cuda.synchronize()
            marks["warm" if returned == warmup else "end"] = {
                "host_rss_mb": _host_rss_bytes() / 2**20, "device_used_mb": _device_used_bytes() / 2**20,
                "torch_allocated_mb": torch.cuda.memory_allocated() / 2**20}
    seconds = time.perf_counter() - start
    growth = {key: marks["end"][key] / marks["warm"][key] - 1.0 for key in marks.get("end", {})
              if marks["warm"][key] > 0}
    return {"frames": frames, "returned": returned, "size": size.label, "warmup_frames": warmup,
            "seconds": seconds, "frames_per_s": returned / seconds, "memory": marks, "growth": growth,
            "pass": returned == frames and all(abs(g) < SOAK_GROWTH_LIMIT for g in growth.values())}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/runtime_checks.py", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--onnx", type=Path, default=None, help="fp16 ONNX export for the onnxruntime-cuda backend")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--max-pixels", type=int, default=1280 * 736, help="tiling budget for the 4K check")
    parser.add_argument("--soak-frames", type=int, default=10_000)
    parser.add_argument("--soak-size", type=ImageSize.parse, default=ImageSize.parse("320x240"))
    parser.add_argument("--soak-weights", type=Path, default=None,
                        help="model of the soak (default: the embedded demonstration model)")
    parser.add_argument("--checks", default="overhead,loop,4k,soak")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if not torch.cuda.is_available():
        print("runtime_checks: needs a CUDA device", file=sys.stderr)
        return 1
    from runtime import Deblurrer

    checks = set(args.checks.split(","))
    model, source = load_model(model_choice_from_args(args), seed=0)
    device = torch.device(args.device)
    torch.cuda.set_device(device)
    # The PyTorch engine eager in channels-last FP16: the checks measure the runtime, not compilation.
    backends: dict[str, Callable[..., Any]] = {
        "torch-fp16": lambda **kw: Deblurrer(model=model, backend="torch", precision="fp16", device=device,
                                             torch_settings="channels-last", strict=True, **kw)}
    if args.onnx is not None:
        backends["onnxruntime-cuda"] = lambda **kw: Deblurrer(engines=args.onnx, backend="onnxruntime", device=device,
                                                              strict=True, engine_options={"provider": "cuda"}, **kw)
    report: dict[str, Any] = {"model": source, "device": torch.cuda.get_device_name(device),
                              "torch": torch.__version__, "command": " ".join(sys.argv), "results": {}}
    frame = natural_frames(ImageSize(1280, 720), 1)[0]
    ok = True
    for name, make in backends.items():
        results: dict[str, Any] = {}
        try:
            with make() as deblurrer:
                if "overhead" in checks:
                    results["overhead"] = check_overhead(deblurrer, frame, args.iterations)
                if "loop" in checks:
                    results["loop"] = check_loop(deblurrer, frame, args.iterations * 3)
            if "4k" in checks:
                results["4k"] = check_4k_tiling(make, args.max_pixels)
        except Exception as exc:  # report and go on to the next backend: this is a measurement run
            results["error"] = f"{type(exc).__name__}: {exc}"
            ok = False
        report["results"][name] = results
        print(name, json.dumps(results, indent=1, default=float), flush=True)
    if "soak" in checks:
        try:
            soak_model = args.soak_weights
            with Deblurrer(model=soak_model, backend="torch", precision="fp16", device=device,
                           torch_settings="channels-last", strict=True) as d:
                report["results"]["soak"] = check_soak(d, args.soak_frames, args.soak_size,
                                                       warmup=min(500, max(1, args.soak_frames // 2)))
        except Exception as exc:
            report["results"]["soak"] = {"error": f"{type(exc).__name__}: {exc}"}
            ok = False
        print("soak", json.dumps(report["results"]["soak"], indent=1, default=float))
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "runtime_checks.json", json.dumps(report, indent=2, default=float).encode())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
