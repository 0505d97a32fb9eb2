"""What the per-kernel benchmarks (bench/dwconv_kernels.py, norm_matmul_kernels.py, gdfn_kernels.py,
mdta_kernels.py) share: their command line (architecture preset, frame size, output folder), the
refusal without a GPU, the timing of one case's forms, the per-frame totals of their tables and the
writing of their JSON and Markdown."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

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


Shape = tuple[int, int, int]  # channels, height, width


def channels_last_maps(shapes: Mapping[Shape, int]) -> Iterator[tuple[Shape, int, torch.Tensor]]:
    """For each (channels, height, width) of ``shapes`` (how often a frame runs it), largest first:
    the shape, its count and a random float16 channels-last CUDA map of it (seed 0 for the first)."""
    torch.manual_seed(0)
    for (c, h, w), count in sorted(shapes.items(), key=lambda item: -item[0][0] * item[0][1] * item[0][2]):
        yield (c, h, w), count, torch.randn(1, c, h, w, device="cuda", dtype=torch.float16).contiguous(
            memory_format=torch.channels_last)


def per_frame_totals(rows: Sequence[dict], names: Sequence[str]) -> list[float]:
    """Each variant's milliseconds per frame: its ``NAME_ms`` per call times the calls a frame makes."""
    return [sum(r[f"{name}_ms"] * r["calls_per_frame"] for r in rows) for name in names]


class Column(NamedTuple):
    """One column of a per-kernel table: its header, its cell of a row, and what its per-frame
    cell holds: "calls" (the calls a frame makes), a variant's name (its milliseconds per frame,
    :func:`per_frame_totals`) or None (nothing)."""

    header: str
    cell: Callable[[dict], str]
    total: str | None = None
    numeric: bool = True  # right-aligned


def kernel_table(title: str, columns: Sequence[Column], rows: Sequence[dict]) -> str:
    """A Markdown table of ``rows`` under ``title``, with a last row of per-frame totals."""
    def line(cells: Sequence[str]) -> str:
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

    totals = ["**per frame**"]
    for column in columns[1:]:
        if column.total == "calls":
            totals.append(str(sum(r["calls_per_frame"] for r in rows)))
        elif column.total:
            totals.append(f"**{per_frame_totals(rows, (column.total,))[0]:.2f}**")
        else:
            totals.append("")
    return "\n".join([f"## {title}", "", line([c.header for c in columns]),
                      line(["---:" if c.numeric else "---" for c in columns]),
                      *(line([c.cell(r) for c in columns]) for r in rows), line(totals)]) + "\n"


def write_results(out: Path | None, stem: str, record: dict[str, Any], table: str) -> None:
    """STEM.json (``record``) and STEM.md (``table``) in ``out``, each written atomically; nothing when ``out`` is None."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{stem}.json", json.dumps(record, indent=1))
    write_atomic(out / f"{stem}.md", table)


def time_forms(row: dict[str, Any], forms: dict[str, Any], run: Callable[[Any], torch.Tensor],
               expected: torch.Tensor) -> None:
    """Into ``row``, for each form: NAME_max_abs_err against ``expected`` and NAME_ms, the median
    time of ``run(form)`` (triton.testing.do_bench), without autograd."""
    from triton.testing import do_bench

    for name, form in forms.items():
        with torch.inference_mode():
            row[f"{name}_max_abs_err"] = (run(form).float() - expected).abs().max().item()
            row[f"{name}_ms"] = do_bench(lambda form=form: run(form), warmup=25, rep=100, return_mode="median")


def frame_bench_main(doc: str, stem: str, what: str, rows_of: Callable[[argparse.Namespace], list[dict]],
                     markdown: Callable[[list[dict], str], str], argv: Sequence[str] | None) -> int:
    """A per-kernel benchmark's command line: parse (on a GPU), measure ``rows_of(args)``, print the
    table titled ``what`` of one frame, write STEM.json and STEM.md."""
    args = parse_on_a_gpu(kernel_parser(doc, stem), argv)
    rows = rows_of(args)
    title = frame_title(what, args)
    table = markdown(rows, title)
    print(table)
    write_results(args.out, stem, {"title": title, "rows": rows}, table)
    return 0
