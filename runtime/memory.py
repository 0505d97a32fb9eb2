"""The default memory budget of a Deblurrer: the largest frame (padded pixels) its Restormer pass
runs whole; larger frames are tiled (:mod:`runtime.tiling`).

:func:`default_max_pixels` gives it for a device and precision, from the free memory of a CUDA
device or the RAM this process may still use on the CPU, with a one-line reason for
``Deblurrer.describe()``. An explicit ``max_pixels`` overrides it. ``python -m runtime.memory``
measures the bytes per pixel that the budget divides by (see :data:`BYTES_PER_PIXEL`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

GiB = 1 << 30

# Peak memory growth per padded pixel of one whole-frame deblur (LE_DM, the 8 denoising steps
# and the Restormer) with the embedded model and the PyTorch backend, batch 1: the slope of a
# least-squares line through (pixels, growth) over square frames, each in a fresh process
# (`python -m runtime.memory --device cpu --sizes 256 512 768 1024`), rounded up so that the
# line's intercept is covered at budget-sized frames.
#   CPU (2-core x86 VM, torch 2.13): growth of VmHWM (/proc/self/status) over VmRSS after a
#        warm-up frame; slope 3,123 B/px, intercept 78 MB (3.33 GB at 1024 x 1024). torch's CPU
#        allocator hands memory back to the OS, so tracemalloc or getrusage deltas would miss it.
#   CUDA (H100, torch 2.11): growth of torch.cuda.max_memory_reserved (what the caching
#        allocator holds: free memory must cover it, not just what is allocated); fp32 over 512
#        to 2048 pixels: slope 5,286 B/px (22.2 GB at 2048 x 2048); fp16 over 512 and 1024 pixels
#        only: 1,874 B/px (1.8 GB at 1024 x 1024).
# Other backends (ONNX Runtime, TensorRT) are given the same figures: their activations are the
# same tensors; their workspaces differ and are left to the margin of the shares below.
BYTES_PER_PIXEL = {("cpu", "fp32"): 3_300, ("cuda", "fp32"): 5_300, ("cuda", "fp16"): 1_900}
# Share of the free memory a frame may take. CUDA: half of what is free once the engines are
# loaded (cuDNN and cuBLAS workspaces, the video path's buffers, other processes on the GPU).
# CPU: a quarter of the available RAM, and at most CPU_CAP: the Restormer's cost on a CPU grows
# linearly with the pixels, so tiles larger than about a megapixel buy no speed (the 32-pixel
# overlap costs ~6 % at 1024-pixel tiles), while a whole 6-megapixel frame would need ~20 GB;
# the cap keeps a run's footprint predictable and leaves the rest of the machine to others.
CUDA_SHARE, CPU_SHARE, CPU_CAP = 0.5, 0.25, 2 * GiB
MIN_PIXELS = 128 * 128  # below this, tiles are mostly overlap: the budget never goes lower


def _meminfo_available() -> int | None:
    """MemAvailable of /proc/meminfo (Linux): RAM that can be used without swapping."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _cgroup_available() -> int | None:
    """What the cgroup (a container's memory limit) still allows, or None without a limit.
    cgroup v2 (memory.max) or v1 (memory.limit_in_bytes)."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, usage = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and usage.isdigit() and int(limit) < 1 << 60:  # v1 says "no limit" with a huge number
            return max(0, int(limit) - int(usage))
        return None
    return None


def available_ram() -> tuple[int | None, str]:
    """(bytes of RAM this process may still use, where the figure comes from); (None, ...) if unknown."""
    candidates = [(value, name) for value, name in ((_meminfo_available(), "MemAvailable"),
                                                    (_cgroup_available(), "cgroup limit")) if value is not None]
    if not candidates:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free pages"
        except (OSError, ValueError):
            return None, "unknown"
    return min(candidates)


def cuda_free(device: torch.device) -> int:
    """Free bytes on a CUDA device, counting what torch's caching allocator holds unused as free."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def default_max_pixels(device: torch.device, precision: str) -> tuple[int, str]:
    """(max_pixels, reason): the padded pixels a frame may have before its Restormer pass is
    tiled on ``device`` in ``precision`` ("fp32" or "fp16"), and one line saying how that was
    decided. Reads the device's free memory now: call it once the engines are loaded."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    per_pixel = BYTES_PER_PIXEL.get((kind, precision), BYTES_PER_PIXEL[(kind, "fp32")])
    if kind == "cuda":
        free = cuda_free(device)
        budget = int(free * CUDA_SHARE)
        source = f"{CUDA_SHARE:.0%} of {free / GiB:.1f} GiB free on {device}"
    else:
        available, where = available_ram()
        if available is None:
            budget, source = CPU_CAP, f"{CPU_CAP / GiB:.1f} GiB (available RAM unknown)"
        else:
            budget = min(int(available * CPU_SHARE), CPU_CAP)
            source = (f"min({CPU_SHARE:.0%} of {available / GiB:.1f} GiB available RAM ({where}), "
                      f"{CPU_CAP / GiB:.0f} GiB)")
    pixels = max(MIN_PIXELS, budget // per_pixel)
    side = math.isqrt(pixels)
    return pixels, (f"max_pixels {pixels:,} (about {side} x {side}): {source} / {per_pixel:,} bytes per pixel "
                    f"({precision} on {kind}, measured)")


# ------------------------------------------------------------------------------ measuring


def _status_bytes(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def measure_once(side: int, device: str, precision: str) -> dict[str, float]:
    """Deblur one random ``side`` x ``side`` frame whole with the embedded model; the peak memory
    growth (CPU: VmHWM over VmRSS; CUDA: max_memory_reserved) in this (fresh) process."""
    import numpy as np

    from runtime.deblurrer import Deblurrer

    with Deblurrer(device=device, precision=precision, max_pixels=1 << 40) as deblurrer:
        deblurrer.deblur(np.zeros((64, 64, 3), np.uint8))  # warm-up: kernels, workspaces, graphs
        frame = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
        if deblurrer.device.type == "cuda":
            torch.cuda.synchronize(deblurrer.device)
            before = torch.cuda.memory_reserved(deblurrer.device)
            torch.cuda.reset_peak_memory_stats(deblurrer.device)
            deblurrer.deblur(frame)
            growth = torch.cuda.max_memory_reserved(deblurrer.device) - before
        else:
            before = _status_bytes("VmRSS")
            deblurrer.deblur(frame)
            growth = _status_bytes("VmHWM") - before
    return {"side": side, "pixels": side * side, "growth": growth}


def measure(sides: list[int], device: str, precision: str) -> dict[str, object]:
    """:func:`measure_once` per size, each in a fresh process, and the least-squares slope."""
    rows = []
    for side in sides:
        out = subprocess.run([sys.executable, "-m", "runtime.memory", "--once", str(side), "--device", device,
                              "--precision", precision], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    xs = [float(r["pixels"]) for r in rows]
    ys = [float(r["growth"]) for r in rows]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return {"device": device, "precision": precision, "rows": rows, "bytes_per_pixel": slope,
            "intercept": mean_y - slope * mean_x}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.memory",
                                description="Measure the peak memory per pixel of a whole-frame deblur.")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 768, 1024])
    p.add_argument("--once", type=int, help=argparse.SUPPRESS)  # one size, in this process
    args = p.parse_args(argv)
    if args.once:
        print(json.dumps(measure_once(args.once, args.device, args.precision)))
    else:
        print(json.dumps(measure(args.sizes, args.device, args.precision), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
