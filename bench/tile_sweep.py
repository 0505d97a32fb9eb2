"""Timing a Triton kernel's tiles one by one at one shape: what the kernel benchmarks' ``--sweep``
share (bench/norm_matmul_kernels.py, bench/dwconv_kernels.py). Needs a GPU."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def time_tiles(tiles: Sequence[tuple[int, ...]], launch: Callable[[tuple[int, ...]], Any], moved_bytes: int,
               label: str) -> list[dict]:
    """Each tile's median milliseconds (``triton.testing.do_bench``) and effective bandwidth
    (``moved_bytes`` over the time), fastest first. A tile that does not compile or fit is skipped
    and named on standard output with ``label``."""
    from triton.testing import do_bench

    timings = []
    for tile in tiles:
        try:
            ms = do_bench(lambda: launch(tile), warmup=10, rep=40, return_mode="median")
        except Exception as exc:  # noqa: BLE001 - a tile that does not compile or fit is skipped, named
            print(f"sweep {label} {tile}: {type(exc).__name__}", flush=True)
            continue
        timings.append({"tile": list(tile), "ms": ms, "GB_per_s": moved_bytes / ms / 1e6})
    timings.sort(key=lambda t: t["ms"])
    return timings
