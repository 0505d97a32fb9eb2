"""One file in, one file out: deblur an image file or a whole video file with a loaded Deblurrer.

Shared by ``python -m runtime`` (one machine) and the Ray pipeline's actors
(:mod:`runtime.corpus_worker`). A video is read, deblurred (:meth:`Deblurrer.stream`: one z_T for
every frame, frames in order) and written in one pass; the output appears under its final name
only when every frame read was written, so a video output that exists is a finished one.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from runtime import io
from runtime.errors import DeblurError

if TYPE_CHECKING:
    from runtime.deblurrer import Deblurrer


class VideoFailed(io.MediaError):
    """A video job failed; the message gives the cause and how many frames had been read. No
    output was written (the partial file was removed)."""

    def __init__(self, message: str, frames_read: int):
        super().__init__(message)
        self.frames_read = frames_read


def deblur_image_file(deblurrer: "Deblurrer", src: str | Path, dst: str | Path) -> None:
    """Read ``src``, deblur it, write ``dst`` atomically with the same depth (8 or 16 bits)."""
    image = io.read_image(src)
    io.write_image(dst, deblurrer.deblur(image.frame), image.bits)


def deblur_video_file(deblurrer: "Deblurrer", src: str | Path, dst: str | Path, fourcc: str | None = None,
                      progress: bool = False) -> int:
    """Deblur every frame of the video ``src`` into ``dst`` (same size and frame rate; codec
    ``fourcc`` or the suffix's, see :class:`runtime.io.VideoWriter`). Returns the number of frames.

    ``progress`` shows a tqdm bar of frames. Raises :class:`VideoFailed` (a MediaError) for an
    unreadable video, a deblurring error or a frame count that does not match; ``dst`` is then
    left as it was.
    """
    src, dst = Path(src), Path(dst)
    frames_in = 0
    try:
        with io.VideoReader(src) as reader, io.VideoWriter(dst, reader.fps, reader.size, fourcc) as writer:
            def counted():
                nonlocal frames_in
                for frame in reader:
                    frames_in += 1
                    yield frame

            with tqdm(total=reader.frame_count or None, desc=src.name, unit="frame", disable=not progress) as bar:
                for sharp in deblurrer.stream(counted()):
                    writer.write(sharp)
                    bar.update(1)
            if writer.frames != frames_in:
                raise io.MediaError(f"{frames_in} frames read but {writer.frames} written")
    except (io.MediaError, DeblurError) as exc:
        raise VideoFailed(f"{exc} (after {frames_in} frames read; no output written)", frames_in) from exc
    return frames_in
