"""The feed-forward half of the Restormer's blocks, kernel by kernel: the fastest form's
per-operation Triton kernels (norm + 1x1 in, depthwise + gate, 1x1 out + residual) against
engines.kernels.gdfn_block's one kernel, at the shapes one frame runs.

    python bench/gdfn_kernels.py --preset gopro --size 1280x720 [--out DIR]

The shapes are recorded from one forward pass of the FP16 channels-last Restormer with padded
channels, for the blocks whose norms the fastest form fuses (all but the bottleneck's). For every
distinct shape the table gives each form's median time per call (triton.testing.do_bench), the
whole kernel's effective bandwidth (x read once, the result written once), the tile the
autotuner chose and each form's largest difference from the float32 reference; the last row
weights each by how often a frame calls it.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Sequence

import torch

from bench.inputs import ImageSize, engine_restormer
from bench.kernel_tables import Column, Shape, channels_last_maps, frame_bench_main, kernel_table, time_forms
from hidiff.config import HIDiffConfig, preset
from hidiff.restormer import TransformerBlock


def frame_blocks(config: HIDiffConfig, size: ImageSize,
                 device: str = "cuda") -> tuple[Counter[Shape], dict[Shape, TransformerBlock]]:
    """How often one frame of ``config``'s Restormer at ``size`` runs the feed-forward half of an
    unmodulated block at each input shape, and one such block per shape (FP16 on CUDA, else FP32)."""
    from engines.kernels import fuse_restormer

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    restormer, blur, prior = engine_restormer(config, size, device, dtype)
    # The per-operation form as the fastest preset runs it: the depthwise convolution and gate as one kernel.
    fuse_restormer(restormer, gates=True, norms=False, prior_attention=False, head_gram=False)
    seen: Counter[Shape] = Counter()
    blocks: dict[Shape, TransformerBlock] = {}

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        _, c, h, w = args[0].shape
        seen[(c, h, w)] += 1
        blocks.setdefault((c, h, w), module)

    for module in restormer.modules():
        if isinstance(module, TransformerBlock) and not module.attn.modulated:
            module.register_forward_pre_hook(record)
    with torch.inference_mode():
        restormer(blur, prior)
    return seen, blocks


def measure(shapes: Counter[Shape], blocks: dict[Shape, TransformerBlock]) -> list[dict]:
    from engines.kernels import gdfn_block as gb
    from engines.kernels.fuse import FusedNormBlock
    from engines.kernels.halo_tiles import halo_block_kernel

    rows = []
    for (c, h, w), count, x in channels_last_maps(shapes):
        forms = {"per_op": FusedNormBlock(blocks[(c, h, w)]), "whole": FusedNormBlock(blocks[(c, h, w)], whole_gdfn=True)}
        whole = forms["whole"]
        conv = whole.ffn.dwconv
        weights = (whole.project_in.weight_t, whole.project_in.bias, whole.ffn_taps, conv.bias, whole.w_out_t,
                   whole.ffn.project_out.bias)
        expected = gb.gdfn_block_reference(x.float(), *[None if t is None else t.float() for t in weights],
                                           whole.project_in.eps, whole.project_in.bias_free)
        row: dict = {"channels": c, "hidden": whole.w_out_t.shape[0], "height": h, "width": w, "calls_per_frame": count}
        time_forms(row, forms, lambda form: form.feed_forward(x), expected)
        row["whole_config"] = str(getattr(halo_block_kernel, "best_config", "?"))
        row["whole_GB_per_s"] = 2 * x.numel() * 2 / row["whole_ms"] / 1e6
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown(rows: list[dict], title: str) -> str:
    return kernel_table(title, [
        Column("C", lambda r: str(r["channels"])),
        Column("hidden", lambda r: str(r["hidden"])),
        Column("H x W", lambda r: f"{r['height']} x {r['width']}", numeric=False),
        Column("calls", lambda r: str(r["calls_per_frame"]), "calls"),
        Column("per-op kernels ms", lambda r: f"{r['per_op_ms']:.3f}", "per_op"),
        Column("whole kernel ms", lambda r: f"{r['whole_ms']:.3f}", "whole"),
        Column("whole GB/s", lambda r: f"{r['whole_GB_per_s']:.0f}"),
        Column("max err per-op / whole", lambda r: f"{r['per_op_max_abs_err']:.1e} / {r['whole_max_abs_err']:.1e}",
               numeric=False),
        Column("tile", lambda r: r["whole_config"].split(", num_ctas")[0], numeric=False),
    ], rows)


def main(argv: Sequence[str] | None = None) -> int:
    return frame_bench_main(__doc__, "gdfn_kernels", "GDFN halves",
                            lambda args: measure(*frame_blocks(preset(args.preset), args.size)), markdown, argv)


if __name__ == "__main__":
    raise SystemExit(main())
