"""What ``python -m runtime`` and ``python -m runtime.batch`` share on the command line: the exit
codes, a parser whose errors are one line, and the Deblurrer's options (engines or weights,
backend, precision, steps, tiling, seed, strict, compile) as arguments and back as keyword
arguments.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from runtime.selection import BACKENDS

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_ARGUMENTS = 0, 1, 2

# --compile: the fastest PyTorch form measured (docs/benchmarks.md, session 10: 45.6 ms per
# 1280x720 frame on an H100 against 151 ms for the default eager FP16 engine).
COMPILED_TORCH_OPTIONS = {"compile": True, "fuse_gates": True, "fuse_norms": True, "cuda_graphs": True}


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr and exit status 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the status (2) and the message are what scripts read.
        self.exit(EXIT_BAD_ARGUMENTS, f"{self.prog}: error: {message} (see --help)\n")


def add_deblurrer_arguments(p: argparse.ArgumentParser) -> None:
    """The Deblurrer's options, except the device (each command has its own notion of it)."""
    p.add_argument("--engines", type=Path, help="artifacts folder: ONNX graphs + manifest.json, TensorRT *.plan")
    p.add_argument("--weights", type=Path, help="HI-Diff weights (.safetensors) for the PyTorch backend")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="default: auto (TensorRT > ORT CUDA > PyTorch)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16"),
                   help="default: the artifacts' own precision (fp32 for --weights)")
    p.add_argument("--steps", type=int, default=8, help="diffusion steps; must equal the model's T (default 8)")
    p.add_argument("--tile", type=int, default=None,
                   help="tile size (multiple of 8) to force tiling; 0 never tiles; default: only when needed")
    p.add_argument("--tile-overlap", type=int, default=32, help="overlap of tiles in pixels (default 32)")
    p.add_argument("--max-pixels", type=int, default=None, help="tile frames with more (padded) pixels than this")
    p.add_argument("--seed", type=int, default=0, help="seed of z_T (default 0)")
    p.add_argument("--strict", action="store_true", help="fail instead of falling back to another backend")
    p.add_argument("--compile", action="store_true",
                   help="the PyTorch backend in FP16 on a GPU, compiled, with the fused Triton kernels and a CUDA graph "
                        "per frame size: the fastest form here, for long videos (the first frame of each size "
                        "compiles and autotunes for about 100 s)")


def check_deblurrer_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """parser.error (exit 2) for an --engines that is not a folder, --weights that is not a file, or
    --compile with exported engines, another backend or FP32."""
    if args.engines is not None and not args.engines.is_dir():
        parser.error(f"--engines {args.engines} is not a folder")
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights} does not exist")
    if args.compile:
        if args.engines is not None or args.backend not in ("auto", "torch"):
            parser.error("--compile runs the PyTorch backend on the model (--weights, or the embedded one): "
                         "drop --engines and --backend, or --compile")
        if args.precision == "fp32":
            parser.error("--compile runs in FP16 (its Triton kernels are float16): drop --precision fp32, or --compile")


def deblurrer_options(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments of :func:`add_deblurrer_arguments` as :class:`runtime.Deblurrer` keywords."""
    options = {"engines": args.engines, "model": args.weights, "backend": args.backend, "precision": args.precision,
               "steps": args.steps, "seed": args.seed, "tile": args.tile, "tile_overlap": args.tile_overlap,
               "max_pixels": args.max_pixels, "strict": args.strict}
    if args.compile:
        options.update(backend="torch", precision="fp16", engine_options=dict(COMPILED_TORCH_OPTIONS))
    return options
