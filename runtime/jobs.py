"""One file in, one file out: deblur an image file or a whole video file with a loaded Deblurrer.

Shared by ``python -m runtime`` (one machine) and the Ray pipeline's actors
(:mod:`runtime.corpus_worker`). A video is read, deblurred (:meth:`Deblurrer.stream`: one z_T for
every frame, frames in order) and written in one pass, its audio and subtitle packets copied as
they are read; the output appears under its final name only when every frame read was written
and the source was whole (or ``accept_partial`` says a short one will do), so a video output
that exists is a finished one.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from runtime import io
from runtime.errors import DeblurError

if TYPE_CHECKING:
    from runtime.deblurrer import Deblurrer

# How far below a frame count estimated from a duration (containers that declare no count, such
# as Matroska) a source may fall before it is called short: the duration of a stream is that of
# its last frame's end, rounded; the container's spans every stream, and audio often runs longer
# than the video (encoder padding: 0.97 s of MP3 against 0.83 s of video, measured on a 10-frame
# test file). A shortfall within this margin goes unnoticed in such containers.
ESTIMATE_TOLERANCE = {"duration": 0.95, "container duration": 0.8}


class VideoFailed(io.MediaError):
    """A video job failed; the message gives the cause and how many frames had been read. No
    output was written (the partial file was removed)."""

    def __init__(self, message: str, frames_read: int):
        super().__init__(message)
        self.frames_read = frames_read


class ShortVideo(VideoFailed):
    """The source ended before the frame count it declares (a truncated or damaged file)."""


@dataclass(frozen=True)
class VideoResult:
    """What a video job wrote: ``frames`` (= frames read), the count the source declares
    (``declared``, 0 for none), and notes on what was not kept (a stream, a partial source)."""

    frames: int
    declared: int
    notes: tuple[str, ...] = ()


def deblur_image_file(deblurrer: "Deblurrer", src: str | Path, dst: str | Path) -> list[str]:
    """Read ``src`` (upright), deblur it, write ``dst`` atomically with the same depth (8 or 16
    bits) and ICC profile where the format allows. Returns notes on what the output could not keep."""
    image = io.read_image(src)
    return io.write_image(dst, deblurrer.deblur(image.frame), image.bits, image.icc)


def _shortfall(reader: io.VideoReader) -> str | None:
    """Why the source looks cut short, or None when it is whole."""
    read, declared, basis = reader.frames_read, reader.frame_count, reader.frame_count_basis
    if basis == "declared":
        short, claim = read < declared, f"declares {declared}"
    else:
        short = basis in ESTIMATE_TOLERANCE and read < declared * ESTIMATE_TOLERANCE[basis] - 1
        claim = f"should hold about {declared} by its {basis}"
    if not short and not reader.damaged_packets:
        return None
    damaged = f", {reader.damaged_packets} damaged packet(s)" if reader.damaged_packets else ""
    return f"{read} frames decoded but the file {claim}{damaged}: truncated or damaged"


def deblur_video_file(deblurrer: "Deblurrer", src: str | Path, dst: str | Path, fourcc: str | None = None,
                      progress: bool = False, accept_partial: bool = False) -> VideoResult:
    """Deblur every frame of the video ``src`` into ``dst``: as many frames, the same size and
    frame rate (and times), the audio and subtitle streams copied (codec ``fourcc`` or the
    suffix's, see :class:`runtime.io.VideoWriter`).

    ``progress`` shows a tqdm bar of frames. Raises :class:`VideoFailed` (a MediaError) for an
    unreadable video, a deblurring error or a write error, and :class:`ShortVideo` for a source
    that ends before its declared frame count unless ``accept_partial``; ``dst`` is then left as
    it was.
    """
    src, dst = Path(src), Path(dst)
    frames_in = 0
    try:
        with io.VideoReader(src) as reader, \
                io.VideoWriter(dst, reader.fps, reader.size, fourcc, source=reader) as writer:
            times: deque[float | None] = deque()

            def counted():
                nonlocal frames_in
                for frame in reader:
                    frames_in += 1
                    times.append(reader.times[-1])
                    yield frame

            with tqdm(total=reader.frame_count or None, desc=src.name, unit="frame", disable=not progress) as bar:
                for sharp in deblurrer.stream(counted()):
                    writer.write(sharp, times.popleft())
                    bar.update(1)
            if writer.frames != frames_in:
                raise io.MediaError(f"{frames_in} frames read but {writer.frames} written")
            notes = list(writer.notes)
            short = _shortfall(reader)
            if short is not None and not accept_partial:
                raise ShortVideo(f"{src}: {short}; no output written (accept partial input to keep the "
                                 f"{frames_in} frames)", frames_in)
            if short is not None:
                notes.append(f"partial source kept: {short}")
            declared = reader.frame_count
    except ShortVideo:
        raise
    except (io.MediaError, DeblurError) as exc:
        raise VideoFailed(f"{exc} (after {frames_in} frames read; no output written)", frames_in) from exc
    return VideoResult(frames_in, declared, tuple(notes))
