"""What the per-kernel benchmarks (bench/dwconv_kernels.py, norm_matmul_kernels.py, gdfn_kernels.py)
share: their command line (architecture preset, frame size, output folder), the refusal without a
GPU, the per-frame totals of their tables and the writing of their JSON and Markdown."""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.inputs import ImageSize
from hidiff.files import write_atomic


def kernel_parser(doc: str, stem: str) -> argparse.ArgumentParser:
    """The parser of a per-kernel benchmark: ``--preset``, ``--size`` and ``--out`` (for STEM.json and STEM.md)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--preset", default="gopro", help="architecture preset (hidiff.config.preset): gopro, realblur_j, ...")
    parser.add_argument("--size", type=ImageSize.parse, default=ImageSize.parse("1280x720"), help="WIDTHxHEIGHT")
    parser.add_argument("--out", type=Path, help=f"folder for {stem}.json and {stem}.md")
    return parser


def parse_on_a_gpu(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; exits with a message on a machine without a CUDA GPU (the benchmarks time CUDA kernels)."""
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("this benchmark times CUDA kernels: run it on a machine with a GPU")
    return args


def frame_title(what: str, args: argparse.Namespace) -> str:
    """``what`` of one frame, with the preset, layout, GPU and torch version."""
    return (f"{what} of one {args.size.label} frame, {args.preset} preset, FP16 channels-last, "
            f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}")


def per_frame_totals(rows: Sequence[dict], names: Sequence[str]) -> list[float]:
    """Each variant's milliseconds per frame: its ``NAME_ms`` per call times the calls a frame makes."""
    return [sum(r[f"{name}_ms"] * r["calls_per_frame"] for r in rows) for name in names]


def write_results(out: Path | None, stem: str, record: dict[str, Any], table: str) -> None:
    """STEM.json (``record``) and STEM.md (``table``) in ``out``, each written atomically; nothing when ``out`` is None."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{stem}.json", json.dumps(record, indent=1))
    write_atomic(out / f"{stem}.md", table)
