"""What ``python -m runtime`` and ``python -m runtime.batch`` share on the command line: the exit
codes, a parser whose errors are one line, and the Deblurrer's options (engines or weights,
backend, precision, PyTorch preset, steps, tiling, seed, strict) as arguments and back as keyword
arguments.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from engines.torch_settings import PRESETS, TorchSettings
from runtime.selection import BACKENDS

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_ARGUMENTS = 0, 1, 2


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
                   help="default: the artifacts' own precision; for the PyTorch model fp16 on a GPU, fp32 on the CPU")
    p.add_argument("--steps", type=int, default=8, help="diffusion steps; must equal the model's T (default 8)")
    p.add_argument("--tile", type=int, default=None,
                   help="tile size (multiple of 8) to force tiling; 0 never tiles; default: only when needed")
    p.add_argument("--tile-overlap", type=int, default=32, help="overlap of tiles in pixels (default 32)")
    p.add_argument("--max-pixels", type=int, default=None, help="tile frames with more (padded) pixels than this")
    p.add_argument("--seed", type=int, default=0, help="seed of z_T (default 0)")
    p.add_argument("--strict", action="store_true", help="fail instead of falling back to another backend")
    p.add_argument("--torch-preset", choices=tuple(PRESETS), default=None,
                   help="how the PyTorch backend runs the model (engines.torch_settings): eager, channels-last, "
                        "compiled, or fastest (compiled, fused Triton kernels, CUDA graphs; GPU and fp16 only). "
                        "Default: fastest on a GPU, eager on the CPU. Compiled forms compile each new frame size "
                        "for minutes: for single images on a GPU, channels-last starts at once")


def check_deblurrer_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """parser.error (exit 2) for an --engines that is not a folder, --weights that is not a file, or
    a --torch-preset with exported engines, another backend or a precision it cannot run."""
    if args.engines is not None and not args.engines.is_dir():
        parser.error(f"--engines {args.engines} is not a folder")
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights} does not exist")
    if args.torch_preset is not None:
        if args.engines is not None or args.backend not in ("auto", "torch"):
            parser.error(f"--torch-preset {args.torch_preset} applies to the PyTorch backend on the model (--weights, "
                         "or the embedded one): drop --engines and --backend, or --torch-preset")
        precision = None if args.precision == "auto" else args.precision
        try:
            TorchSettings.preset(args.torch_preset).check(precision=precision)
        except ValueError as exc:
            parser.error(f"--torch-preset {args.torch_preset} with --precision {args.precision}: {exc}")


def deblurrer_options(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments of :func:`add_deblurrer_arguments` as :class:`runtime.Deblurrer` keywords."""
    options = {"engines": args.engines, "model": args.weights, "backend": args.backend, "precision": args.precision,
               "steps": args.steps, "seed": args.seed, "tile": args.tile, "tile_overlap": args.tile_overlap,
               "max_pixels": args.max_pixels, "strict": args.strict}
    if args.torch_preset is not None:
        options["torch_settings"] = TorchSettings.preset(args.torch_preset)
    return options
