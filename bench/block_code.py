"""The code ``torch.compile`` generates for one Transformer block of the Restormer on CUDA, as the
engines run it (FP16, channels-last, padded channels, fused GDFN gate), without and with the
LayerNorms inside the projections (engines.kernels.fuse.FusedNormBlock): what inductor adds around
the custom kernels, such as copies of their inputs.

    python bench/block_code.py --level decoder_level1 --size 1280x720 --out DIR

Writes ``DIR/<variant>.py`` (inductor's output code) and prints, per variant, the kernels the
compiled block launches in order, with the generated kernels' source lines that name no aten
operation (inductor names a kernel after the operations it fuses; a bare ``triton_poi_fused_N``
is a copy or layout change).
"""
from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path
from typing import Sequence

import torch

from bench.inputs import ImageSize, engine_restormer
from hidiff.config import preset

LAUNCH = re.compile(r"^\s*(?:\w+\s*=\s*)?(?:(\w+)\.run\(|(extern_kernels\.\w+|torch\.ops\.\w+\.\w+)|(\w+_kernel\w*)\[)")


def launches(code: str) -> list[str]:
    """The kernels a generated ``call`` launches, in order: inductor's Triton kernels, extern
    kernels (cuBLAS, cuDNN) and user kernels."""
    names = []
    for line in code.splitlines():
        match = LAUNCH.match(line)
        if match:
            names.append(next(g for g in match.groups() if g))
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gopro")
    parser.add_argument("--level", default="decoder_level1", help="the Restormer level whose first block is compiled")
    parser.add_argument("--size", type=ImageSize.parse, default=ImageSize.parse("1280x720"),
                        help="the frame, WIDTHxHEIGHT (the level's input is smaller by its scale)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("inductor generates CUDA code only with a GPU: run it on a machine with one")
    from torch._inductor.utils import run_and_get_code

    from engines.kernels import fuse_restormer
    from engines.kernels.fuse import FusedNormBlock

    restormer, blur, prior = engine_restormer(preset(args.preset), args.size, "cuda", torch.float16)
    fuse_restormer(restormer, norms=False, prior_attention=False, head_gram=False)
    level = getattr(restormer, args.level)
    captured: dict[str, torch.Tensor] = {}
    level.blocks[0].register_forward_pre_hook(lambda module, inputs: captured.setdefault("x", inputs[0]))
    with torch.inference_mode():
        restormer(blur, prior)
    x = captured["x"]
    block = level.blocks[0]
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{args.level} block 0: input {tuple(x.shape)} strides {x.stride()}")
    for name, module in (("plain", block), ("fused_norms", FusedNormBlock(copy.deepcopy(block)))):
        torch._dynamo.reset()
        with torch.inference_mode():
            _, codes = run_and_get_code(torch.compile(module), x)
        code = "\n\n".join(codes)
        (args.out / f"{name}.py").write_text(code)
        print(f"\n== {name}: {' -> '.join(launches(code))}")
        for kernel in sorted(set(re.findall(r"\b(triton_\w+_fused_\d+)\b", code))):
            print(f"   {kernel}: a copy or layout change (no aten operation in its name)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
