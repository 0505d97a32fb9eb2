"""One launch of each of the project's Triton kernels (and cuDNN's depthwise convolution beside
them) at the largest shapes of a frame, inside a profiler range for Nsight Compute.

    ncu --profile-from-start off --clock-control none --section SpeedOfLight \\
        --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \\
        --section WarpStateStats python bench/kernel_counters.py --size 1280x720

Each kernel is first run outside the range (its autotuning and warm-up), then launched once
between ``cudaProfilerStart`` and ``cudaProfilerStop``: ncu reads the hardware counters of
exactly those launches, named in the order printed. Without ncu the script only runs them.
"""
from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from bench.inputs import ImageSize


def _map(c: int, h: int, w: int) -> torch.Tensor:
    return torch.randn(1, c, h, w, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)


def cases(size: ImageSize) -> dict[str, Callable[[], torch.Tensor]]:
    """The launches to count, at the GoPro model's full-resolution (96 channels: decoder level 1
    and refinement) and 192-channel (level 3) shapes of a frame of ``size``."""
    from engines.kernels.gated_dwconv import gated_dwconv3x3
    from engines.kernels.gdfn_block import gdfn_block
    from engines.kernels.halo_tiles import depthwise_taps
    from engines.kernels.mdta_block import mdta_apply
    from engines.kernels.norm_matmul import conv1x1_residual, norm_conv1x1

    h, w = size.height, size.width
    full, quarter = (h, w), (h // 4, w // 4)
    runs: dict[str, Callable[[], torch.Tensor]] = {}
    for label, (hh, ww), c, hidden in (("level1", full, 96, 256), ("level3", quarter, 192, 512)):
        y, wd = _map(2 * hidden, hh, ww), torch.randn(2 * hidden, 1, 3, 3, device="cuda", dtype=torch.float16) * 0.3
        x = _map(c, hh, ww)
        w_in, b_in = (torch.randn(c, 2 * hidden, device="cuda") * c ** -0.5).half(), torch.randn(2 * hidden, device="cuda").half()
        w_qkv, b_qkv = (torch.randn(c, 3 * c, device="cuda") * c ** -0.5).half(), torch.randn(3 * c, device="cuda").half()
        gated = _map(hidden, hh, ww)
        w_out = (torch.randn(c, hidden, device="cuda") * hidden ** -0.5).half()
        qkv = _map(3 * c, hh, ww)
        w_dw = torch.randn(3 * c, 1, 3, 3, device="cuda", dtype=torch.float16) * 0.3
        runs[f"gated_dwconv3x3 {label} {2 * hidden}ch"] = functools.partial(gated_dwconv3x3, y, wd)
        runs[f"norm_conv1x1 {label} {c}->{2 * hidden}"] = functools.partial(norm_conv1x1, x, w_in, b_in, 1e-5)
        runs[f"norm_conv1x1 {label} {c}->{3 * c}"] = functools.partial(norm_conv1x1, x, w_qkv, b_qkv, 1e-5)
        runs[f"conv1x1_residual {label} {hidden}->{c}"] = functools.partial(conv1x1_residual, gated, w_out, None, x)
        runs[f"gdfn_block {label} {c}ch"] = functools.partial(gdfn_block, x, w_in, b_in, depthwise_taps(wd, 2), None,
                                                               w_out.t().contiguous(),
                                                               None, 1e-5)
        runs[f"cudnn depthwise {label} {3 * c}ch"] = functools.partial(F.conv2d, qkv, w_dw, padding=1,
                                                                       groups=qkv.shape[1])
        heads = c // 48
        mixing = (torch.randn(1, c, c, device="cuda") * c ** -0.5).half()
        runs[f"mdta pass 1 {label} {c}ch {heads} heads"] = functools.partial(  # the kernel alone, not its epilogue
            torch.ops.hidiff.mdta_gram_partials, x, w_qkv, b_qkv, depthwise_taps(w_dw, 3), None, heads, 1e-5, False)
        runs[f"mdta pass 2 {label} {c}ch"] = functools.partial(mdta_apply, x, w_qkv, b_qkv,
                                                               depthwise_taps(w_dw, 3), None, mixing, None,
                                                               1e-5)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=ImageSize.parse, default=ImageSize.parse("1280x720"), help="WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("this script launches CUDA kernels: run it on a machine with a GPU")
    runs = cases(args.size)
    with torch.inference_mode():
        for fn in runs.values():  # autotuning and warm-up, outside the profiled range
            fn()
            fn()
        torch.cuda.synchronize()
        for name, fn in runs.items():
            print(f"counted launch: {name}", flush=True)
            torch.cuda.profiler.start()
            fn()
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
