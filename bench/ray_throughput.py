"""Corpus throughput with 1 Ray actor and with N: does deblurring scale across GPUs?

    python bench/ray_throughput.py --actors 1 2 --frames 256 --size 1280x720 --json ray_throughput.json
    python bench/ray_throughput.py --actors 1 2 --frames 8 --size 64x48 --device cpu --json out.json   # a laptop

The same frames (``--frames`` synthetic smooth frames of ``--size``, or every image of
``--input``) go through :func:`runtime.distributed.deblur_corpus` once per actor count, each run
into a fresh output folder, in one Ray session (Ray's start is not timed; each run's actors
loading their engines is, in the wall figure). Printed and written to ``--json``: per actor
count, frames/s over the processing span (first unit's start to last unit's end: the figure to
compare), frames/s over the whole run, per-actor frames/s, and the ratio to the first count.
Default actor counts: 1 and the number of GPUs (1 and 2 without GPUs).
Exit codes: 0 done, 1 some frames failed, 2 bad arguments (one line on stderr).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.report import describe_environment
from hidiff.files import write_atomic
from runtime.cli import Parser, add_deblurrer_arguments, check_deblurrer_arguments, deblurrer_options
from runtime.corpus_report import CorpusReport

PROG = "python bench/ray_throughput.py"


def parse_size(text: str) -> tuple[int, int]:
    """"1280x720" -> (720, 1280): WIDTHxHEIGHT as bench/latency.py and video people write it,
    returned as (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from exc
    if height < 8 or width < 8:
        raise argparse.ArgumentTypeError(f"size {text!r}: sides of at least 8 pixels")
    return height, width


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Frames/s of the Ray corpus pipeline with 1 actor and with N.")
    p.add_argument("--actors", type=int, nargs="+", default=None,
                   help="actor counts to run (default: 1 and the number of GPUs; 1 2 without GPUs)")
    p.add_argument("--frames", type=int, default=64, help="synthetic frames (default 64)")
    p.add_argument("--size", type=parse_size, default=(720, 1280), help="WIDTHxHEIGHT of the frames (default 1280x720)")
    p.add_argument("--input", type=Path, default=None, help="a folder of images to use instead of synthetic frames")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"), help="default: GPUs when present")
    p.add_argument("--gpus-per-actor", type=float, default=1.0, help="GPU share of an actor (default 1)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs of an actor (default 1)")
    p.add_argument("--batch-size", type=int, default=None, help="images per unit (default: the engines' batch)")
    p.add_argument("--repeat", type=int, default=1, help="runs per actor count; the fastest is kept (default 1)")
    p.add_argument("--address", default=None, help="Ray cluster to join ('auto', HOST:PORT); default a local Ray")
    p.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    add_deblurrer_arguments(p)
    return p


def synthetic_frames(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """``count`` smooth random BGR frames (a blurred look; each different) as PNGs in ``folder``."""
    rng = np.random.default_rng(seed)
    height, width = size
    paths = []
    for i in range(count):
        small = rng.random((max(2, height // 16), max(2, width // 16), 3), dtype=np.float32)
        frame = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        path = folder / f"frame_{i:05d}.png"
        cv2.imwrite(str(path), np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8))
        paths.append(path)
    return paths


def default_counts(gpus: int) -> list[int]:
    """1 and every GPU; 1 alone on one GPU; 1 and 2 on CPUs."""
    if gpus == 1:
        return [1]
    return [1, gpus if gpus > 1 else 2]


def run_entry(actors: int, report: CorpusReport) -> dict[str, Any]:
    return {
        "actors": actors,
        "frames": report.frames,
        "failed": len(report.failed),
        "seconds": report.seconds,
        "processing_seconds": report.processing_seconds,
        "frames_per_second": report.frames_per_second,
        "processing_frames_per_second": report.processing_frames_per_second,
        "per_actor": [{"actor": a.actor, "backend": a.backend, "frames": a.frames,
                       "frames_per_second": a.frames_per_second} for a in report.actors],
    }


def format_table(runs: list[dict[str, Any]]) -> str:
    base = runs[0]["processing_frames_per_second"] or float("nan")
    lines = [f"{'actors':>6} {'frames':>7} {'frames/s':>9} {'wall frames/s':>14} {'per actor':>22} {'ratio':>6}"]
    for run in runs:
        per_actor = " ".join(f"{a['frames_per_second']:.2f}" for a in run["per_actor"])
        lines.append(f"{run['actors']:>6} {run['frames']:>7} {run['processing_frames_per_second']:>9.2f} "
                     f"{run['frames_per_second']:>14.2f} {per_actor:>22} "
                     f"{run['processing_frames_per_second'] / base:>6.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.actors is not None and min(args.actors) < 1:
        parser.error(f"--actors {args.actors}: every count must be >= 1")
    if args.frames < 1 or args.repeat < 1:
        parser.error("--frames and --repeat must be >= 1")
    if args.input is not None and not args.input.is_dir():
        parser.error(f"--input {args.input} is not a folder")
    check_deblurrer_arguments(parser, args)
    from runtime.distributed import PipelineError, deblur_corpus, import_ray, ray_session

    try:
        import_ray()
    except ImportError as exc:
        parser.error(str(exc))
    options = deblurrer_options(args)
    with tempfile.TemporaryDirectory(prefix="ray_throughput-") as scratch, ray_session(args.address) as ray:
        scratch_dir = Path(scratch)
        if args.input is None:
            source = scratch_dir / "frames"
            source.mkdir()
            synthetic_frames(source, args.frames, args.size, args.seed)
        else:
            source = args.input
        gpus = int(ray.cluster_resources().get("GPU", 0)) if args.device != "cpu" else 0
        counts = list(dict.fromkeys(args.actors or default_counts(gpus)))
        runs = []
        for count in counts:
            best: dict[str, Any] | None = None
            for attempt in range(args.repeat):
                try:
                    report = deblur_corpus(source, scratch_dir / f"out_{count}_{attempt}", actors=count,
                                           device=args.device, gpus_per_actor=args.gpus_per_actor,
                                           cpus_per_actor=args.cpus_per_actor, images_per_unit=args.batch_size,
                                           progress=False, **options)
                except (ValueError, PipelineError) as exc:
                    parser.error(str(exc).replace("\n", " "))
                entry = run_entry(count, report)
                if best is None or entry["processing_frames_per_second"] > best["processing_frames_per_second"]:
                    best = entry
            assert best is not None
            runs.append(best)
            print(f"{count} actor(s): {best['processing_frames_per_second']:.2f} frames/s", file=sys.stderr)
    base = runs[0]["processing_frames_per_second"]
    for run in runs:
        run["ratio_to_first"] = run["processing_frames_per_second"] / base if base > 0 else None
    print(format_table(runs))
    if args.json is not None:
        device = "cuda:0" if gpus and _driver_has_cuda() else "cpu"
        result = {
            "benchmark": "ray_throughput",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([PROG, *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
            "settings": {"frames": args.frames if args.input is None else None, "size": list(args.size),
                         "input": str(args.input) if args.input else None, "device": args.device,
                         "gpus_in_cluster": gpus, "gpus_per_actor": args.gpus_per_actor,
                         "cpus_per_actor": args.cpus_per_actor, "batch_size": args.batch_size,
                         "repeat": args.repeat, "options": {k: str(v) for k, v in options.items()}},
            "environment": describe_environment(device),
            "runs": runs,
        }
        write_atomic(args.json, json.dumps(result, indent=2) + "\n")
        print(f"written: {args.json}")
    return 1 if any(run["failed"] for run in runs) else 0


def _driver_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
