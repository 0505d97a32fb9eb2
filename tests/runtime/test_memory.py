"""runtime.memory: the default memory budget on the CPU (from the available RAM, capped), what a
Deblurrer makes of it (frames above it are tiled, max_pixels and tile=0 override it), and the
peak-memory benchmark that checks a 6-megapixel photo against 4 GB (bench/peak_memory.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from runtime_helpers import make_tiny_model

from bench import peak_memory
from runtime import memory
from runtime.deblurrer import Deblurrer

REPO = Path(__file__).resolve().parents[2]
GB = 10**9


def test_cpu_budget_follows_available_ram_and_its_cap():
    pixels, reason = memory.default_max_pixels(torch.device("cpu"), "fp32")
    per_pixel = memory.BYTES_PER_PIXEL[("cpu", "fp32")]
    available, where = memory.available_ram()
    assert available is not None and where in ("MemAvailable", "cgroup limit")
    assert memory.MIN_PIXELS <= pixels <= max(memory.MIN_PIXELS, memory.CPU_CAP // per_pixel)
    assert pixels * per_pixel <= max(available * memory.CPU_SHARE, memory.MIN_PIXELS * per_pixel)
    assert f"max_pixels {pixels:,}" in reason and "available RAM" in reason and "\n" not in reason


def test_available_ram_is_at_most_what_meminfo_reports():
    meminfo = Path("/proc/meminfo").read_text()
    total = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal:"))) * 1024
    available, _ = memory.available_ram()
    assert available is not None and 0 < available <= total


def test_deblurrer_tiles_frames_above_the_default_budget():
    with Deblurrer(model=make_tiny_model(), device="cpu") as deblurrer:
        expected, reason = memory.default_max_pixels(deblurrer.device, "fp32")
        assert abs(deblurrer.tiling.max_pixels - expected) <= expected // 100  # free RAM moves a little between the calls
        assert deblurrer.max_pixels_reason.startswith("max_pixels")
        assert deblurrer.pipeline.plan(2000, 3000) is not None  # 6 MP: tiled
        assert deblurrer.pipeline.plan(64, 64) is None
    with Deblurrer(model=make_tiny_model(), device="cpu", max_pixels=10**8) as deblurrer:
        assert deblurrer.tiling.max_pixels == 10**8 and deblurrer.pipeline.plan(2000, 3000) is None
    with Deblurrer(model=make_tiny_model(), device="cpu", tile=0) as deblurrer:
        assert deblurrer.tiling.max_pixels is None and deblurrer.pipeline.plan(2000, 3000) is None


def test_peak_memory_benchmark_measures_a_default_run(capsys):
    """bench/peak_memory.py, the check of the 6-megapixel case (``--size 3000x2000``, minutes on a
    2-core CPU), on a small photo: the run completes and its peak is reported against the budget."""
    assert peak_memory.main(["--size", "96x64", "--budget-gb", "4"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("96x64 on cpu, default options: peak resident memory ") and "(budget 4 GB)" in line
    assert 0.05 < float(line.split("memory ")[1].split(" GB")[0]) < 4


def test_rusage_reads_a_childs_peak():
    """The measuring method of bench/peak_memory.py, checked on a child that holds 300 MB once."""
    code = "import numpy as np; a = np.ones(300 * 10**6, np.uint8); print(a.sum())"
    done = subprocess.run([sys.executable, "-c",
                           "import resource, subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]]); "
                           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)", code],
                          capture_output=True, text=True, check=True)
    assert 300 * 10**6 < int(done.stdout.split()[-1]) < 600 * 10**6
