"""Command line: deblur a corpus with Ray Data, one actor per GPU, resumable.

    python -m runtime.batch IN OUT [--address auto] [--actors N] [--device auto|cuda|cpu]
                                   [--engines DIR | --weights FILE] [--retries 2] [--video-codec FFV1] ...

IN: a folder (every image and video below it), a ``.txt`` list of paths or URIs (one a line), a
URI of a folder (``s3://bucket/prefix``) or one file. OUT: a folder; each output has its input's
name relative to IN. Outputs that exist are finished and skipped, so running the same command
again after a crash, a kill or a failure does only the rest. The run ends with a report (done,
skipped, failed with reasons, frames/s per actor and overall), also written to OUT/_report.json.

Without ``--address`` a local Ray starts on this machine (every GPU, or the CPUs); ``--address
auto`` or ``HOST:PORT`` joins a running cluster (``ray start --head`` / ``ray start --address``),
whose nodes must see IN, OUT and the engines at the same paths and have this project installed.
Needs the Ray extra: ``pip install -e ".[ray]"``.

Exit status: 0 all done, 1 some failed, 2 bad arguments or Ray missing (one line on stderr).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from runtime import io
from runtime.cli import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    Parser,
    add_deblurrer_arguments,
    check_deblurrer_arguments,
    deblurrer_options,
)
from runtime.corpus import REPORT_NAME

PROG = "python -m runtime.batch"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Deblur a corpus of images and videos on many GPUs and machines with Ray Data.")
    p.add_argument("input", help="a folder, a .txt list of paths/URIs, a folder URI (s3://...) or one file")
    p.add_argument("output", type=Path, help="output folder (shared by every node on a cluster)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: 'auto' or HOST:PORT (default: start a local Ray)")
    p.add_argument("--actors", type=int, default=None,
                   help="deblurring actors (default: one per GPU; on CPUs, CPUs / --cpus-per-actor)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                   help="auto: GPUs when the cluster has any (default)")
    p.add_argument("--gpus-per-actor", type=float, default=1.0,
                   help="GPU share of an actor; 0.5 runs two actors per GPU (default 1)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs of an actor (default 1)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images deblurred together (default: the engines' largest batch, 4 without a profile)")
    p.add_argument("--retries", type=int, default=2, help="further attempts for a failed item (default 2)")
    p.add_argument("--video-codec", default=None,
                   help="codec of output videos: mp4v, MJPG or FFV1 (lossless); default by suffix")
    add_deblurrer_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("actors", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} {value}: expected >= 1")
    if args.retries < 0:
        parser.error(f"--retries {args.retries}: expected >= 0")
    if args.video_codec is not None and args.video_codec not in io.CODECS:
        parser.error(f"--video-codec {args.video_codec!r}: expected one of {', '.join(io.CODECS)} "
                     "(four characters; FFV1 is lossless)")
    if args.output.exists() and not args.output.is_dir():
        parser.error(f"output {args.output} is a file; expected a folder")
    check_deblurrer_arguments(parser, args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    _check(parser, args)
    from runtime.distributed import PipelineError, deblur_corpus

    try:
        report = deblur_corpus(args.input, args.output, address=args.address, actors=args.actors,
                               device=args.device, gpus_per_actor=args.gpus_per_actor,
                               cpus_per_actor=args.cpus_per_actor, images_per_unit=args.batch_size,
                               retries=args.retries, video_fourcc=args.video_codec, progress=not args.quiet,
                               **deblurrer_options(args))
    except (ValueError, ImportError, FileNotFoundError, PipelineError) as exc:
        parser.error(str(exc).replace("\n", " "))
    print(report.summary())
    print(f"report: {args.output / REPORT_NAME}")
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
