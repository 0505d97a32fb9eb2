"""Where ``torch.compile`` splits a graph: ``torch._dynamo.explain`` of one graph module.

    python bench/compile_breaks.py --preset gopro --graph restormer --size 256x256

A graph break ends one inductor graph and starts another: nothing fuses across it, and each
break costs a return to Python per call. Runs the module as the PyTorch backend does (float16 and
channels-last on CUDA, float32 on the CPU), traces it once without compiling, and prints the
number of graphs, the breaks and their reasons. Exits 1 if there is a break.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from bench.inputs import ImageSize, add_model_arguments, load_model, model_choice_from_args
from hidiff.graphs import graph_modules


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/compile_breaks.py", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--graph", default="restormer", choices=("le_dm", "denoise_step", "restormer"))
    parser.add_argument("--size", type=ImageSize.parse, default=ImageSize.parse("256x256"))
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    model = load_model(model_choice_from_args(args), seed=0)[0].to(device=device, dtype=dtype)
    if cuda:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    module = graph_modules(model, dtype, channels_last=cuda)[args.graph]
    height, width = args.size.padded
    tokens, channels = model.prior_shape
    blur = torch.rand(1, 3, height, width, device=device)
    prior = torch.randn(1, tokens, channels, device=device)
    inputs = {"le_dm": (blur,), "restormer": (blur, prior),
              "denoise_step": (prior, prior, torch.tensor([0], device=device))}[args.graph]
    with torch.inference_mode():
        explanation = torch._dynamo.explain(module)(*inputs)
    print(f"{args.graph} {args.size.label} on {device} ({dtype}): {explanation.graph_count} graph(s), "
          f"{explanation.graph_break_count} break(s), {explanation.op_count} ops")
    for reason in explanation.break_reasons:
        frame = reason.user_stack[-1] if reason.user_stack else None
        where = f"{frame.filename}:{frame.lineno}" if frame is not None else "?"
        print(f"  break at {where}: {reason.reason}")
    return 1 if explanation.graph_break_count else 0


if __name__ == "__main__":
    sys.exit(main())
