"""Command line: deblur an image, a folder of images or a video.

    python -m runtime IN OUT [--engines DIR] [--weights FILE] [--backend auto] [--device 0]
                             [--precision fp32] [--tile N] [--tile-overlap 32] [--seed 0] [--strict] [--compile]

IN an image file -> OUT an image file (or a folder to put it in); IN a folder -> OUT a folder
(same file names; a file that cannot be read or deblurred is reported and skipped); IN a video
-> OUT a video of the same size and frame rate (mp4v for .mp4, MJPG for .avi), the frames
counted in and out. A summary closes the run: done, failed (with names), backend, frames/s.

Exit status: 0 all done, 1 some failed, 2 bad arguments (one line on stderr saying what to fix).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from runtime import io
from runtime.cli import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    Parser,
    add_deblurrer_arguments,
    check_deblurrer_arguments,
    deblurrer_options,
)
from runtime.errors import BackendError, DeblurError
from runtime.jobs import deblur_image_file, deblur_video_file

PROG = "python -m runtime"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Deblur an image, a folder of images or a video with HI-Diff.")
    from engines.version import version_text
    p.add_argument("--version", action="version", version=version_text(PROG))
    p.add_argument("input", type=Path, help="an image, a folder of images or a video (.mp4, .avi, ...)")
    p.add_argument("output", type=Path, help="where to write: an image, a folder, or a video")
    p.add_argument("--device", default="0", help="CUDA index, cuda:N or cpu (default 0, CPU if no GPU)")
    add_deblurrer_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


@dataclass
class Report:
    done: int = 0
    frames: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self, backend: str) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        lines = [f"done: {self.done} ({self.frames} frames)", f"failed: {len(self.failed)}"]
        lines += [f"  {name}: {why}" for name, why in self.failed]
        lines += [f"backend: {backend}", f"speed: {rate:.2f} frames/s"]
        return "\n".join(lines)


def _check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The job kind ("image", "folder", "video"); parser.error (exit 2) for unusable paths."""
    if not args.input.exists():
        parser.error(f"input {args.input} does not exist")
    kind = io.kind_of(args.input)
    if kind is None:
        parser.error(f"input {args.input}: unknown file type; expected a folder, an image "
                     f"({', '.join(io.IMAGE_SUFFIXES)}) or a video ({', '.join(io.VIDEO_SUFFIXES)})")
    if kind == "folder" and args.output.exists() and not args.output.is_dir():
        parser.error(f"output {args.output} is a file; a folder input needs an output folder")
    if kind == "folder" and args.output.resolve() == args.input.resolve():
        parser.error("output folder equals the input folder; pick another so the inputs are not overwritten")
    if kind == "image" and not args.output.is_dir() and args.output.suffix.lower() not in io.IMAGE_SUFFIXES:
        parser.error(f"output {args.output}: expected an image file ({', '.join(io.IMAGE_SUFFIXES)}) or a folder")
    if kind == "video" and args.output.suffix.lower() not in io.VIDEO_SUFFIXES:
        parser.error(f"output {args.output}: expected a video file ({', '.join(io.VIDEO_SUFFIXES)})")
    if kind == "folder" and not io.list_images(args.input):
        parser.error(f"input folder {args.input} holds no images ({', '.join(io.IMAGE_SUFFIXES)})")
    check_deblurrer_arguments(parser, args)
    return kind


def _open_deblurrer(parser: argparse.ArgumentParser, args: argparse.Namespace):  # -> Deblurrer
    from runtime.deblurrer import Deblurrer

    try:
        return Deblurrer(device=args.device, **deblurrer_options(args))
    except (ValueError, FileNotFoundError, BackendError) as exc:
        parser.error(str(exc).replace("\n", " "))


def run_images(deblurrer, paths: list[Path], out_dir: Path | None, out_file: Path | None, quiet: bool) -> Report:
    report = Report()
    start = time.perf_counter()
    for path in tqdm(paths, desc="images", unit="img", disable=quiet or len(paths) < 2):
        target = out_file if out_file is not None else out_dir / path.name  # type: ignore[operator]
        try:
            deblur_image_file(deblurrer, path, target)
        except (io.MediaError, DeblurError) as exc:
            report.failed.append((path.name, str(exc)))
            continue
        report.done += 1
        report.frames += 1
    report.seconds = time.perf_counter() - start
    return report


def run_video(deblurrer, src: Path, dst: Path, quiet: bool) -> Report:
    report = Report()
    start = time.perf_counter()
    try:
        report.frames = deblur_video_file(deblurrer, src, dst, progress=not quiet)
    except io.MediaError as exc:
        report.failed.append((src.name, str(exc)))
    else:
        report.done = 1
    report.seconds = time.perf_counter() - start
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    kind = _check_paths(parser, args)
    deblurrer = _open_deblurrer(parser, args)
    backend = f"{deblurrer.backend} on {deblurrer.device} ({deblurrer.backend_reason})"
    print(f"backend: {backend}", file=sys.stderr)
    try:
        if kind == "video":
            report = run_video(deblurrer, args.input, args.output, args.quiet)
        elif kind == "folder":
            args.output.mkdir(parents=True, exist_ok=True)
            report = run_images(deblurrer, io.list_images(args.input), args.output, None, args.quiet)
        else:
            out_file = args.output / args.input.name if args.output.is_dir() else args.output
            report = run_images(deblurrer, [args.input], None, out_file, args.quiet)
    finally:
        deblurrer.close()
    print(report.summary(backend))
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
