"""Command line: deblur an image, a folder of images or a video.

    python -m runtime IN OUT [--engines DIR] [--weights FILE] [--backend auto] [--device 0]
                             [--precision fp32] [--tile N] [--tile-overlap 32] [--seed 0] [--strict]

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
from typing import NoReturn, Sequence

from tqdm import tqdm

from runtime import io
from runtime.errors import BackendError, DeblurError
from runtime.selection import BACKENDS

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_ARGUMENTS = 0, 1, 2
PROG = "python -m runtime"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the status (2) and the message are what scripts read.
        self.exit(EXIT_BAD_ARGUMENTS, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Deblur an image, a folder of images or a video with HI-Diff.")
    p.add_argument("input", type=Path, help="an image, a folder of images or a video (.mp4, .avi, ...)")
    p.add_argument("output", type=Path, help="where to write: an image, a folder, or a video")
    p.add_argument("--engines", type=Path, help="artifacts folder: ONNX graphs + manifest.json, TensorRT *.plan")
    p.add_argument("--weights", type=Path, help="HI-Diff weights (.safetensors) for the PyTorch backend")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="default: auto (TensorRT > ORT CUDA > PyTorch)")
    p.add_argument("--device", default="0", help="CUDA index, cuda:N or cpu (default 0, CPU if no GPU)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16"),
                   help="default: the artifacts' own precision (fp32 for --weights)")
    p.add_argument("--steps", type=int, default=8, help="diffusion steps; must equal the model's T (default 8)")
    p.add_argument("--tile", type=int, default=None,
                   help="tile size (multiple of 8) to force tiling; 0 never tiles; default: only when needed")
    p.add_argument("--tile-overlap", type=int, default=32, help="overlap of tiles in pixels (default 32)")
    p.add_argument("--max-pixels", type=int, default=None, help="tile frames with more (padded) pixels than this")
    p.add_argument("--seed", type=int, default=0, help="seed of z_T (default 0)")
    p.add_argument("--strict", action="store_true", help="fail instead of falling back to another backend")
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
    if args.engines is not None and not args.engines.is_dir():
        parser.error(f"--engines {args.engines} is not a folder")
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights} does not exist")
    return kind


def _open_deblurrer(parser: argparse.ArgumentParser, args: argparse.Namespace):  # -> Deblurrer
    from runtime.deblurrer import Deblurrer

    try:
        return Deblurrer(engines=args.engines, model=args.weights, backend=args.backend, device=args.device,
                         precision=args.precision, steps=args.steps, seed=args.seed, tile=args.tile,
                         tile_overlap=args.tile_overlap, max_pixels=args.max_pixels, strict=args.strict)
    except (ValueError, FileNotFoundError, BackendError) as exc:
        parser.error(str(exc).replace("\n", " "))


def run_images(deblurrer, paths: list[Path], out_dir: Path | None, out_file: Path | None, quiet: bool) -> Report:
    report = Report()
    start = time.perf_counter()
    for path in tqdm(paths, desc="images", unit="img", disable=quiet or len(paths) < 2):
        target = out_file if out_file is not None else out_dir / path.name  # type: ignore[operator]
        try:
            image = io.read_image(path)
            io.write_image(target, deblurrer.deblur(image.frame), image.bits)
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
    frames_in = 0
    try:
        with io.VideoReader(src) as reader, io.VideoWriter(dst, reader.fps, reader.size) as writer:
            def counted():
                nonlocal frames_in
                for frame in reader:
                    frames_in += 1
                    yield frame

            bar = tqdm(total=reader.frame_count or None, desc=src.name, unit="frame", disable=quiet)
            with bar:
                for sharp in deblurrer.stream(counted()):
                    writer.write(sharp)
                    bar.update(1)
            if writer.frames != frames_in:
                raise io.MediaError(f"{frames_in} frames read but {writer.frames} written")
    except (io.MediaError, DeblurError) as exc:
        report.failed.append((src.name, f"{exc} (after {frames_in} frames read; no output written)"))
    else:
        report.done = 1
        report.frames = frames_in
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
