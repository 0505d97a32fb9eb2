"""GDFN's depthwise convolution and gate, kernel by kernel: cuDNN's convolution and inductor's
gate against engines.kernels.gated_dwconv's fused kernel, at the shapes one frame runs.

    python bench/dwconv_kernels.py --preset gopro --size 1280x720 [--out DIR]

The shapes are recorded from one forward pass of the FP16 channels-last Restormer with padded
channels (what the PyTorch CUDA engines run). For every distinct shape the table gives each
variant's median time per call (triton.testing.do_bench), the fused kernel's effective bandwidth
(its reads and writes of the activations, once each), the tile the autotuner chose and the
largest difference from the float32 PyTorch reference; the last row weights each variant by how
often a frame calls it: the frame time it would spend in these operations.
"""
from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from bench.inputs import ImageSize, engine_restormer
from bench.kernel_tables import Column, frame_title, kernel_parser, kernel_table, parse_on_a_gpu, write_results
from hidiff.config import HIDiffConfig, preset
from hidiff.restormer import GDFN

Shape = tuple[int, int, int]  # input channels (2 x hidden), height, width


def frame_shapes(config: HIDiffConfig, size: ImageSize, device: str = "cuda") -> Counter[Shape]:
    """How often one frame of ``config``'s Restormer at ``size`` calls GDFN's depthwise convolution
    at each shape, with its channels padded as the CUDA engines pad them (float16 on CUDA, else float32) and
    the frame padded to the Restormer's multiple as the pipeline pads it."""
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    restormer, blur, prior = engine_restormer(config, size, device, dtype)
    seen: Counter[Shape] = Counter()

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        _, c, h, w = args[0].shape
        seen[(c, h, w)] += 1

    for module in restormer.modules():
        if isinstance(module, GDFN):
            module.dwconv.register_forward_pre_hook(record)
    with torch.inference_mode():
        restormer(blur, prior)
    return seen


def variants() -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    from engines.kernels.gated_dwconv import gated_dwconv3x3

    gate = torch.compile(lambda z: F.gelu(z[:, : z.shape[1] // 2]) * z[:, z.shape[1] // 2 :])
    return {"cudnn": lambda y, w: gate(F.conv2d(y, w, None, padding=1, groups=y.shape[1])),
            "fused": lambda y, w: gated_dwconv3x3(y, w)}


def measure(shapes: Counter[Shape]) -> list[dict]:
    from triton.testing import do_bench

    from engines.kernels import gated_dwconv

    rows = []
    timed = variants()
    torch.manual_seed(0)
    for (c, h, w), count in sorted(shapes.items(), key=lambda item: -item[0][0] * item[0][1] * item[0][2]):
        y = torch.randn(1, c, h, w, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
        weight = torch.randn(c, 1, 3, 3, device="cuda", dtype=torch.float16) * 0.3
        expected = gated_dwconv.gated_dwconv3x3_reference(y.float(), weight.float(), None)
        row: dict = {"channels_in": c, "height": h, "width": w, "calls_per_frame": count}
        for name, fn in timed.items():
            with torch.inference_mode():
                got = fn(y, weight)
                row[f"{name}_max_abs_err"] = (got.float() - expected).abs().max().item()
                row[f"{name}_ms"] = do_bench(lambda: fn(y, weight), warmup=25, rep=100, return_mode="median")
        row["fused_config"] = str(getattr(gated_dwconv.gated_dwconv3x3_kernel, "best_config", "?"))
        moved = y.numel() * 2 + expected.numel() * 2  # bytes: read the input once, write the output once
        row["fused_GB_per_s"] = moved / row["fused_ms"] / 1e6
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def sweep_tiles() -> list[tuple[int, int, int, int]]:
    """(PAIRS, BLOCK_C, warps, ROWS) with 2 channels of a pixel pair per thread (4 need about 234
    registers on sm_90: engines.kernels.gated_dwconv's TILES), in strips of 16, 34 and 64 rows."""
    tiles = []
    for pairs, channels, warps, rows in itertools.product((2, 4, 8, 16), (32, 64, 128), (2, 4, 8), (16, 34, 64)):
        if pairs * channels == 64 * warps:
            tiles.append((pairs, channels, warps, rows))
    return tiles


def sweep(shapes: Counter[Shape], largest: int = 2) -> list[dict]:
    """Every tile of :func:`sweep_tiles` at the ``largest`` shapes (by bytes): milliseconds, best first."""
    from bench.tile_sweep import time_tiles
    from engines.kernels import gated_dwconv

    results = []
    for c, h, w in sorted(shapes, key=lambda s: -s[0] * s[1] * s[2])[:largest]:
        y = torch.randn(1, c, h, w, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
        weight = torch.randn(c, 1, 3, 3, device="cuda", dtype=torch.float16) * 0.3

        def launch(tile: tuple[int, ...], y: torch.Tensor = y, weight: torch.Tensor = weight) -> torch.Tensor:
            pairs, channels, warps, rows = tile
            return gated_dwconv.launch_gated_dwconv3x3(gated_dwconv.gated_dwconv3x3_kernel.fn, y, weight, None,
                                                       ROWS=rows, PAIRS=pairs, BLOCK_C=channels, num_warps=warps)

        moved = y.numel() * 2 * 3 // 2  # read y, write half as many channels
        timings = time_tiles(sweep_tiles(), launch, moved, str((c, h, w)))
        entry = {"shape": [c, h, w], "best": timings[:8], "worst": timings[-1:]}
        print(json.dumps(entry), flush=True)
        results.append(entry)
    return results


def markdown(rows: list[dict], title: str) -> str:
    return kernel_table(title, [
        Column("channels in", lambda r: str(r["channels_in"])),
        Column("H x W", lambda r: f"{r['height']} x {r['width']}", numeric=False),
        Column("calls", lambda r: str(r["calls_per_frame"]), "calls"),
        Column("cuDNN + gate ms", lambda r: f"{r['cudnn_ms']:.3f}", "cudnn"),
        Column("fused ms", lambda r: f"{r['fused_ms']:.3f}", "fused"),
        Column("fused GB/s", lambda r: f"{r['fused_GB_per_s']:.0f}"),
        Column("fused max err", lambda r: f"{r['fused_max_abs_err']:.1e}"),
        Column("tile", lambda r: r["fused_config"].split(", num_ctas")[0], numeric=False),
    ], rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = kernel_parser(__doc__, "dwconv_kernels")
    parser.add_argument("--sweep", action="store_true", help="also time a grid of tiles at the two largest shapes")
    args = parse_on_a_gpu(parser, argv)
    shapes = frame_shapes(preset(args.preset), args.size)
    rows = measure(shapes)
    title = frame_title("GDFN depthwise convolution and gate", args)
    table = markdown(rows, title)
    print(table)
    swept = sweep(shapes) if args.sweep else []
    write_results(args.out, "dwconv_kernels", {"title": title, "rows": rows, "sweep": swept}, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
