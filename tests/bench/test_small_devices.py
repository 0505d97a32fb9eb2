"""bench/latency.py on small devices: the grid that fits the free memory, and what a Jetson's
report records (power mode, clocks, a tegrastats sample).

No Jetson and no GPU here: the memory figures are given to :func:`fit_cases`, and stand-in
``nvpmodel``, ``jetson_clocks`` and ``tegrastats`` executables (small scripts printing what the
real tools print) are put first on PATH.
"""
from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from bench.inputs import ImageSize
from bench.latency import GIB, estimated_peak_bytes, fit_cases
from bench.report import describe_environment, jetson_state

GRID = [(ImageSize.parse(s), b) for s in ("256x256", "1280x720", "1920x1080") for b in (1, 4)]
GOPRO_DIM = 48  # network_g.dim of the GoPro release


def test_the_estimate_covers_the_recorded_h100_peak():
    # The GoPro model's eager FP32 peak at 1920x1080 batch 4 on an H100 was 54,940 MiB
    # (torch_max_allocated_mb in the project's recorded bench/latency.py runs).
    recorded = 54_940 * 2**20
    assert recorded <= estimated_peak_bytes(ImageSize(1920, 1080), 4, "fp32", GOPRO_DIM) <= 1.1 * recorded
    assert estimated_peak_bytes(ImageSize(1280, 720), 1, "fp16", GOPRO_DIM) < estimated_peak_bytes(
        ImageSize(1280, 720), 1, "fp32", GOPRO_DIM)


def test_an_h100_runs_the_whole_default_grid():
    kept, skipped = fit_cases(GRID, GOPRO_DIM, int(79 * GIB), "cudaMemGetInfo free")
    assert kept == GRID and skipped == []


def test_an_orin_skips_and_names_what_cannot_fit():
    kept, skipped = fit_cases(GRID, GOPRO_DIM, int(50 * GIB), "MemAvailable (/proc/meminfo; integrated GPU)")
    assert [(s.label, b) for s, b in kept] == [("256x256", 1), ("256x256", 4), ("1280x720", 1), ("1280x720", 4),
                                               ("1920x1080", 1)]
    [item] = skipped
    assert (item["backend"], item["size"], item["batch"]) == ("*", "1920x1080", 4)
    assert item["reason"].startswith("1920x1080 batch 4 needs about 56.6 GiB for the eager FP32 reference")
    assert "50.0 GiB available (MemAvailable (/proc/meminfo; integrated GPU))" in item["reason"]
    assert "--no-memory-check" in item["reason"]


def test_an_orin_nano_keeps_the_small_cases():
    kept, skipped = fit_cases(GRID, GOPRO_DIM, int(5 * GIB), "MemAvailable")
    assert [(s.label, b) for s, b in kept] == [("256x256", 1), ("256x256", 4)]
    assert len(skipped) == 4


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def jetson_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _tool(tmp_path, "nvpmodel", "import sys\nassert sys.argv[1:] == ['-q']\nprint('NV Power Mode: MAXN')\nprint(0)\n")
    _tool(tmp_path, "jetson_clocks", "import sys\nprint('jetson_clocks needs root', file=sys.stderr)\nsys.exit(1)\n")
    _tool(tmp_path, "tegrastats", "import itertools, time\nfor i in itertools.count():\n"
                                  "    print(f'RAM {1000 + i}/62841MB GR3D_FREQ 0%', flush=True)\n    time.sleep(0.1)\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_a_jetsons_state_is_recorded(jetson_tools: Path):
    start = time.perf_counter()
    state = jetson_state()
    assert time.perf_counter() - start < 10  # tegrastats never ends by itself: one sample is taken
    assert state == {"power_mode": "NV Power Mode: MAXN\n0", "clocks": None, "tegrastats": "RAM 1000/62841MB GR3D_FREQ 0%"}


def test_off_a_jetson_nothing_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert jetson_state() is None
    env = describe_environment("cpu")
    assert (env["jetson"], env["integrated"], env["sm_count"], env["driver"], env["driver_release"]) == (
        None, None, None, None, None)
