"""Peak resident memory of one ``python -m runtime`` run with default options on a photo of a
given size: the bundled sample resized to WIDTHxHEIGHT, deblurred in a fresh process whose peak
(ru_maxrss of the waited-for child) is read by a wrapper, so nothing else counts.

    python bench/peak_memory.py --size 3000x2000 --budget-gb 4

Prints the peak and exits 1 when it is over ``--budget-gb``. Use it to check the default memory
budget (runtime.memory) on a machine: the whole run, model loading included, is measured.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from bench.inputs import ImageSize

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "hidiff" / "samples" / "blurry.png"
GB = 10**9
# Runs ``python -m runtime ARGV`` and prints its peak resident bytes and exit status.
WRAPPER = ("import resource, subprocess, sys; "
           "r = subprocess.run([sys.executable, '-m', 'runtime'] + sys.argv[1:]); "
           "print('peak', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, r.returncode)")


def peak_rss_of_runtime(argv: list[str], timeout: float = 3600) -> tuple[int, int, str]:
    """(peak resident bytes, exit status, output) of ``python -m runtime ARGV`` in a fresh process."""
    done = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    last = lines[-1].split() if lines else []
    if len(last) != 3 or last[0] != "peak":
        raise RuntimeError(f"the measuring wrapper printed no peak:\n{done.stdout}{done.stderr}")
    return int(last[1]), int(last[2]), done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/peak_memory.py", description=__doc__.splitlines()[0])
    p.add_argument("--size", type=ImageSize.parse, default=ImageSize.parse("3000x2000"), help="WIDTHxHEIGHT")
    p.add_argument("--device", default="cpu", help="the runtime's --device (default cpu)")
    p.add_argument("--budget-gb", type=float, default=4.0, help="exit 1 above this peak (default 4)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "photo.png", Path(tmp) / "sharp.png"
        cv2.imwrite(str(src), cv2.resize(cv2.imread(str(SAMPLE)), (args.size.width, args.size.height),
                                         interpolation=cv2.INTER_CUBIC))
        start = time.perf_counter()
        peak, status, output = peak_rss_of_runtime([str(src), str(dst), "--device", args.device, "-q"])
        seconds = time.perf_counter() - start
        written = cv2.imread(str(dst))
    if status != 0 or written is None or written.shape[:2] != (args.size.height, args.size.width):
        print(output, file=sys.stderr)
        print(f"the run failed (exit {status})", file=sys.stderr)
        return 1
    print(f"{args.size.width}x{args.size.height} on {args.device}, default options: peak resident memory "
          f"{peak / GB:.2f} GB (budget {args.budget_gb:g} GB), {seconds:.0f} s")
    return 0 if peak < args.budget_gb * GB else 1


if __name__ == "__main__":
    raise SystemExit(main())
