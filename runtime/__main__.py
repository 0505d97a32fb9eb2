"""Command line: deblur an image, a folder of images or a video.

    python -m runtime IN OUT [--engines DIR] [--weights FILE] [--backend auto] [--device 0]
                             [--precision fp32] [--torch-preset NAME] [--tile N] [--tile-overlap 32]
                             [--max-pixels N] [--seed 0] [--strict] [--accept-partial] [-q]

IN an image -> OUT an image file, or a folder to put it in; IN a folder -> OUT a folder (same
file names); IN a video -> OUT a video, or a folder: as many frames, the same size and frame
rate, the audio and subtitle streams copied unchanged. Images come out upright (EXIF
orientation applied) with their bit depth and ICC profile where the output format allows.

An output never replaces an input, however the paths are spelled (the same file through a
link, ``..``, a folder into itself): refused before anything runs. Every file that cannot be
read, deblurred or written is reported with its reason and the run goes on; a summary closes
the run (done, failed with reasons, notes, backend, frames/s). A video that ends before its
declared frame count fails, naming both counts, unless ``--accept-partial``.

SIGINT (Ctrl-C) or SIGTERM: the file in progress is abandoned (its temporary file removed), the
summary printed, exit 130 or 143. Temporary files that a killed run left beside its outputs
(hidden: ``.NAME.XXXXXXXX.SUFFIX``) are removed by the next run of the same outputs.

Exit status: 0 all done, 1 some failed, 2 bad arguments (one line on stderr saying what to fix),
128 + the signal's number when interrupted.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
log = logging.getLogger("runtime")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Deblur an image, a folder of images or a video with HI-Diff.")
    from engines.version import version_text
    p.add_argument("--version", action="version", version=version_text(PROG))
    p.add_argument("input", type=Path, help="an image, a folder of images or a video (.mp4, .avi, ...)")
    p.add_argument("output", type=Path, help="where to write: an image, a folder, or a video")
    p.add_argument("--device", default="0", help="CUDA index, cuda:N or cpu (default 0, CPU if no GPU)")
    add_deblurrer_arguments(p)
    p.add_argument("--accept-partial", action="store_true",
                   help="keep the frames of a video that ends before its declared frame count (default: fail)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


@dataclass(frozen=True)
class Job:
    """One input file and its output."""

    kind: str  # "image" or "video"
    src: Path
    dst: Path


@dataclass
class Report:
    done: int = 0
    frames: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: int | None = None  # the signal that stopped the run
    abandoned: str | None = None  # the file in progress then
    total: int = 0

    def summary(self, backend: str) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        lines = []
        if self.interrupted is not None:
            where = f"; {self.abandoned} abandoned, no output written for it" if self.abandoned else ""
            left = self.total - self.done - len(self.failed)
            lines.append(f"interrupted by {signal.Signals(self.interrupted).name}{where}; {left} of {self.total} "
                         "files not done")
        lines += [f"done: {self.done} ({self.frames} frames)", f"failed: {len(self.failed)}"]
        lines += [f"  {name}: {why}" for name, why in self.failed]
        if self.notes:
            lines.append(f"notes: {len(self.notes)}")
            lines += [f"  {name}: {note}" for name, note in self.notes]
        lines += [f"backend: {backend}", f"speed: {rate:.3g} frames/s"]
        return "\n".join(lines)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, so that the per-file ``except Exception``
    does not take it for a failure of that file."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` (once: a second signal while the run winds
    down is ignored, so that the cleanup finishes). Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    watched = (signal.SIGINT, signal.SIGTERM)

    def handler(signum: int, frame: object) -> None:
        for s in watched:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in watched}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


# ------------------------------------------------------------------------------------ paths


def _same_file(a: Path, b: Path) -> bool:
    """True when writing ``b`` would replace ``a``: the same path once links and ``..`` are
    resolved, or the same file (a hard link)."""
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop: compare the files below
        pass
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _check_output_folder(parser: argparse.ArgumentParser, folder: Path, output: Path) -> None:
    """parser.error unless ``folder`` (where outputs go) is, or can be made, a writable folder."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        parser.error(f"output {output}: {base} is a file, not a folder")
    try:
        read_only = bool(os.statvfs(base).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        parser.error(f"output {output}: {base} is on a read-only file system; write elsewhere")
    if not os.access(base, os.W_OK | os.X_OK):
        parser.error(f"output {output}: no permission to write in {base}")


def plan_jobs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Job]:
    """The jobs of this run; parser.error (exit 2) for unusable paths, and before anything runs
    for an output that would replace an input."""
    src, out = args.input, args.output
    if not src.exists():
        parser.error(f"input {src} does not exist")
    kind = io.kind_of(src)
    if kind is None:
        parser.error(f"input {src}: unknown file type; expected a folder, an image "
                     f"({', '.join(io.IMAGE_SUFFIXES)}) or a video ({', '.join(io.VIDEO_SUFFIXES)})")
    if kind == "folder":
        if out.exists() and not out.is_dir():
            parser.error(f"output {out} is a file; a folder input needs an output folder")
        if not out.exists() and out.suffix.lower() in io.IMAGE_SUFFIXES + io.VIDEO_SUFFIXES:
            parser.error(f"output {out} is named like a file, but a folder input writes a folder of images; "
                         "name the output folder without an image or video suffix")
        out_real, src_real = out.resolve(), src.resolve()
        if out_real == src_real or src_real in out_real.parents:
            parser.error(f"output folder {out} is the input folder {src} or inside it: outputs would replace "
                         "inputs or be read as inputs by the next run; pick a folder outside it")
        images = io.list_images(src)
        if not images:
            parser.error(f"input folder {src} holds no images ({', '.join(io.IMAGE_SUFFIXES)})")
        jobs = [Job("image", path, out / path.name) for path in images]
        folder = out
    else:
        suffixes = io.IMAGE_SUFFIXES if kind == "image" else io.VIDEO_SUFFIXES
        if out.is_dir():
            dst = out / src.name
        elif out.suffix.lower() in suffixes:
            dst = out
        else:
            parser.error(f"output {out}: expected an {kind} file ({', '.join(suffixes)}) or a folder")
        jobs = [Job(kind, src, dst)]
        folder = dst.parent
    for job in jobs:
        if _same_file(job.src, job.dst):
            parser.error(f"output {job.dst} would overwrite the input {job.src}; pick another output name or folder")
    _check_output_folder(parser, folder, out)
    check_deblurrer_arguments(parser, args)
    return jobs


def _open_deblurrer(parser: argparse.ArgumentParser, args: argparse.Namespace):  # -> Deblurrer
    from runtime.deblurrer import Deblurrer

    try:
        return Deblurrer(device=args.device, **deblurrer_options(args))
    except (ValueError, FileNotFoundError, BackendError) as exc:
        parser.error(str(exc).replace("\n", " "))


# -------------------------------------------------------------------------------------- run


def _reason(exc: Exception) -> str:
    """What went wrong with one file, in one line."""
    text = str(exc).replace("\n", " ") or repr(exc)
    return text if isinstance(exc, (io.MediaError, DeblurError)) else f"{type(exc).__name__}: {text}"


def remove_stale_temporaries(jobs: list[Job]) -> int:
    """Remove the temporary files a killed run left for these outputs; how many there were."""
    removed = 0
    for job in jobs:
        for stale in io.temporaries_of(job.dst):
            stale.unlink(missing_ok=True)
            removed += 1
    return removed


def run_jobs(deblurrer, jobs: list[Job], quiet: bool = False, accept_partial: bool = False,
             report: Report | None = None) -> Report:
    """Every job in turn; a failure of one, of any kind, is recorded and the next goes on.
    Stops at :class:`Interrupted`, recorded in the report."""
    report = report if report is not None else Report()
    report.total = len(jobs)
    start = time.perf_counter()
    try:
        for job in tqdm(jobs, desc="images", unit="img", disable=quiet or len(jobs) < 2):
            name = job.src.name
            try:
                if job.kind == "video":
                    result = deblur_video_file(deblurrer, job.src, job.dst, progress=not quiet,
                                               accept_partial=accept_partial)
                    frames, notes = result.frames, list(result.notes)
                else:
                    frames, notes = 1, deblur_image_file(deblurrer, job.src, job.dst)
            except Interrupted:
                report.abandoned = name
                # The writers remove their temporary file as the exception passes; this catches
                # one made in the instant before its writer took charge of it.
                for stale in io.temporaries_of(job.dst):
                    stale.unlink(missing_ok=True)
                raise
            except Exception as exc:  # any failure of one file is that file's; the run goes on
                report.failed.append((name, _reason(exc)))
                tqdm.write(f"failed: {name}: {_reason(exc)}", file=sys.stderr)
                continue
            report.done += 1
            report.frames += frames
            report.notes += [(name, note) for note in notes]
    except Interrupted as stop:
        report.interrupted = stop.signum
    finally:
        report.seconds = time.perf_counter() - start
    return report


def _configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # The backend choice and its reason are logged once, by the Deblurrer, when it opens.
    log.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging()
    report = Report()
    backend = "none opened"
    with signals_interrupt():
        try:
            jobs = plan_jobs(parser, args)
            report.total = len(jobs)
            removed = remove_stale_temporaries(jobs)
            if removed:
                log.info("removed %d temporary file(s) that an interrupted run left beside the outputs", removed)
            deblurrer = _open_deblurrer(parser, args)
            try:
                backend = f"{deblurrer.backend} on {deblurrer.device}"
                run_jobs(deblurrer, jobs, args.quiet, args.accept_partial, report)
            finally:
                deblurrer.close()
        except Interrupted as stop:  # while planning, while the model loaded, or while closing
            report.interrupted = stop.signum
    print(report.summary(backend), flush=True)
    if report.interrupted is not None:
        return 128 + report.interrupted
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
