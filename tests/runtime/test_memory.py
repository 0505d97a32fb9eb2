"""runtime.memory: the default memory budget on the CPU (from the available RAM, capped), what a
Deblurrer makes of it (frames above it are tiled, max_pixels and tile=0 override it), and the
acceptance case: a 6-megapixel photo with default options peaks below 4 GB of resident memory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from runtime_helpers import frame_u8, make_tiny_model

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


def _peak_rss_of(argv: list[str]) -> tuple[int, str]:
    """Run ``python -m runtime ARGV`` in a fresh process and return (peak resident bytes of that
    process, its output). The peak is ru_maxrss of the waited-for child (VmHWM at its exit),
    read in a wrapper process so that no earlier child of pytest counts."""
    wrapper = ("import resource, subprocess, sys; "
               "r = subprocess.run([sys.executable, '-m', 'runtime'] + sys.argv[1:]); "
               "print('peak', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, r.returncode)")
    done = subprocess.run([sys.executable, "-c", wrapper, *argv], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=3600)
    last = done.stdout.strip().splitlines()[-1].split()
    assert last[0] == "peak" and last[2] == "0", done.stdout + done.stderr
    return int(last[1]), done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("HIDIFF_HEAVY_TESTS") != "1",
                    reason="a 6-megapixel photo through the embedded model took 13 minutes on a shared "
                           "2-core CPU; set HIDIFF_HEAVY_TESTS=1 to run it")
def test_six_megapixel_photo_with_default_options_peaks_below_4_gb(tmp_path):
    src = tmp_path / "photo.png"
    cv2.imwrite(str(src), frame_u8(2000, 3000, seed=1))
    peak, output = _peak_rss_of([str(src), str(tmp_path / "sharp.png"), "--device", "cpu", "-q"])
    assert peak < 4 * GB, f"peak resident memory {peak / GB:.2f} GB\n{output}"
    assert cv2.imread(str(tmp_path / "sharp.png")).shape == (2000, 3000, 3)


def test_rusage_reads_a_childs_peak():
    """The measuring method of the test above, checked on a child that holds 300 MB once."""
    code = "import numpy as np; a = np.ones(300 * 10**6, np.uint8); print(a.sum())"
    done = subprocess.run([sys.executable, "-c",
                           "import resource, subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]]); "
                           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)", code],
                          capture_output=True, text=True, check=True)
    assert 300 * 10**6 < int(done.stdout.split()[-1]) < 600 * 10**6
