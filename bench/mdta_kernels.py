"""The attention half of the Restormer's blocks, kernel by kernel: the fastest form's per-operation
kernels (norm + 1x1 qkv, cuDNN's depthwise convolution, the per-head q k^T kernel, 1x1 + residual)
against engines.kernels.mdta_block's two passes, at the shapes one frame runs.

    python bench/mdta_kernels.py --preset gopro --size 1280x720 [--out DIR]

The shapes are those of bench/gdfn_kernels.py (the blocks whose norms the fastest form fuses). For
every distinct shape the table gives each form's median time per call (triton.testing.do_bench,
the (C x C) softmax and folding between the passes included), the two passes' effective bandwidth
(x read three times, the result written once), the tiles the autotuners chose and each form's
largest difference from the float32 reference; the last row weights each by how often a frame
calls it.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Sequence

import torch

from bench.gdfn_kernels import frame_blocks
from bench.kernel_tables import Column, Shape, channels_last_maps, frame_bench_main, kernel_table, time_forms
from hidiff.config import preset
from hidiff.restormer import TransformerBlock


def measure(shapes: Counter[Shape], blocks: dict[Shape, TransformerBlock]) -> list[dict]:
    from engines.kernels import mdta_block as mb
    from engines.kernels.fuse import FusedNormBlock
    from engines.kernels.halo_tiles import halo_block_kernel

    rows = []
    for (c, h, w), count, x in channels_last_maps(shapes):
        block = blocks[(c, h, w)]
        forms = {"per_op": FusedNormBlock(block), "two_pass": FusedNormBlock(block, whole_mdta=True)}
        fused = forms["two_pass"]
        norm, conv, attn = fused.qkv, fused.attn.qkv_dwconv, fused.attn
        floats = [None if t is None else t.float() for t in (norm.weight_t, norm.bias, fused.qkv_taps, conv.bias)]
        with torch.inference_mode():
            cosine = mb.mdta_cosine_reference(x.float(), *floats, attn.num_heads, norm.eps, norm.bias_free)
            bias = attn.project_out.bias
            expected = mb.mdta_apply_reference(x.float(), *floats, attn.mixing_from_cosine(cosine, torch.float32),
                                               None if bias is None else bias.float(), norm.eps, norm.bias_free)
        row: dict = {"channels": c, "heads": attn.num_heads, "height": h, "width": w, "calls_per_frame": count}
        time_forms(row, forms, lambda form: form.attention(x), expected)
        row["two_pass_configs"] = (f"{getattr(mb.mdta_gram_kernel, 'best_config', '?')}; "
                                   f"{getattr(halo_block_kernel, 'best_config', '?')}")
        row["two_pass_GB_per_s"] = 4 * x.numel() * 2 / row["two_pass_ms"] / 1e6
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown(rows: list[dict], title: str) -> str:
    return kernel_table(title, [
        Column("C", lambda r: str(r["channels"])),
        Column("heads", lambda r: str(r["heads"])),
        Column("H x W", lambda r: f"{r['height']} x {r['width']}", numeric=False),
        Column("calls", lambda r: str(r["calls_per_frame"]), "calls"),
        Column("per-op kernels ms", lambda r: f"{r['per_op_ms']:.3f}", "per_op"),
        Column("two passes ms", lambda r: f"{r['two_pass_ms']:.3f}", "two_pass"),
        Column("two passes GB/s", lambda r: f"{r['two_pass_GB_per_s']:.0f}"),
        Column("max err per-op / two passes",
               lambda r: f"{r['per_op_max_abs_err']:.1e} / {r['two_pass_max_abs_err']:.1e}", numeric=False),
        Column("tiles", lambda r: r["two_pass_configs"].replace(", num_ctas: 1", ""), numeric=False),
    ], rows)


def main(argv: Sequence[str] | None = None) -> int:
    return frame_bench_main(__doc__, "mdta_kernels", "MDTA halves",
                            lambda args: measure(*frame_blocks(preset(args.preset), args.size)), markdown, argv)


if __name__ == "__main__":
    raise SystemExit(main())
