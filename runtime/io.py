"""Reading and writing images, folders and videos with OpenCV, for the CLI.

Images keep their channels (``IMREAD_UNCHANGED``: grayscale, BGR, BGRA) and depth: 8-bit files
come as uint8, 16-bit ones as float32 in [0, 1] and are written back as 16-bit. Videos keep
their size and frame rate; the codec follows the output's extension (mp4v for .mp4, MJPG for
.avi, see :data:`FOURCC`) unless one is named (``FFV1`` in .avi or .mkv is lossless). Writes go
to a temporary name in the same folder, then ``os.replace``, so an interrupted job never leaves a
half-written file under the final name (:func:`temporaries_of` finds what a killed job left).
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from hidiff.files import plain_file_mode

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
VIDEO_SUFFIXES = tuple(FOURCC)
UINT16_MAX = 65535.0

Kind = Literal["image", "folder", "video"]


class MediaError(OSError):
    """A file could not be read or written; the message names the file and the cause."""


def kind_of(path: str | Path) -> Kind | None:
    """"folder" for a directory, "image"/"video" by suffix, None for anything else."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class Image:
    """A frame read from a file and the depth to write it back with."""

    frame: np.ndarray  # H x W (gray), H x W x 3 (BGR) or H x W x 4 (BGRA); uint8 or float32 in [0, 1]
    bits: int  # 8 or 16


def read_image(path: str | Path) -> Image:
    """Read an image file as OpenCV holds it (BGR order); MediaError if it cannot be decoded."""
    path = Path(path)
    return _as_image(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), str(path))


def decode_image(data: bytes, name: str) -> Image:
    """:func:`read_image` for the bytes of an image file (fetched from a URI); ``name`` is for messages."""
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    return _as_image(frame, name)


def _as_image(frame: np.ndarray | None, path: str) -> Image:
    if frame is None:
        raise MediaError(f"{path}: OpenCV cannot read it (missing, empty, corrupt or not an image)")
    if frame.dtype == np.uint16:
        return Image((frame.astype(np.float32) / UINT16_MAX), 16)
    if frame.dtype != np.uint8:
        raise MediaError(f"{path}: pixel type {frame.dtype} is not supported; expected 8- or 16-bit")
    return Image(frame, 8)


def _temporary(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, plain_file_mode())  # not mkstemp's 0600: outputs are read by others (a shared folder)
    return Path(tmp)


def temporaries_of(path: str | Path) -> list[Path]:
    """The temporary files that writes of ``path`` left behind (a job killed mid-write): the names
    :func:`_temporary` makes, ``.STEM.XXXXXXXX.SUFFIX`` beside ``path``."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.[a-z0-9_]{{8}}{re.escape(path.suffix)}")
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))


def write_image(path: str | Path, frame: np.ndarray, bits: int = 8) -> None:
    """Write ``frame`` (uint8, or float32 in [0, 1]) atomically; 16-bit when ``bits == 16``."""
    path = Path(path)
    if bits == 16 and frame.dtype == np.float32:
        frame = np.round(np.clip(frame, 0.0, 1.0) * UINT16_MAX).astype(np.uint16)
    elif frame.dtype == np.float32:
        frame = np.round(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        if not cv2.imwrite(str(tmp), frame):
            raise MediaError(f"{path}: OpenCV could not encode a {frame.dtype} image of shape {frame.shape}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class VideoReader:
    """Frames of a video file as H x W x 3 uint8 BGR arrays, in order.

    ``fps``, ``size`` (width, height) and ``frame_count`` (the container's claim, which may be
    0 or approximate) come from the file. Use as a context manager or call ``close``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise MediaError(f"{self.path}: OpenCV cannot open it as a video")
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS)) or 25.0
        width, height = self._capture.get(cv2.CAP_PROP_FRAME_WIDTH), self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
        self.size = (int(width), int(height))
        self.frame_count = max(0, int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)))

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self._capture.read()
            if not ok:
                return
            yield frame

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """Writes H x W x 3 uint8 BGR frames of one size to a video, atomically on ``close``.

    The codec is ``fourcc`` (four characters, e.g. ``"FFV1"``, lossless) or, by default, the
    suffix's (:data:`FOURCC`). If the job fails (``abort`` or an exception inside ``with``), the
    partial file is removed and the final name is untouched.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], fourcc: str | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC:
            raise MediaError(f"{self.path}: unknown video suffix {suffix!r}; expected one of {list(FOURCC)}")
        codec = FOURCC[suffix] if fourcc is None else fourcc
        if len(codec) != 4:
            raise MediaError(f"{self.path}: codec {codec!r} is not a four-character code (e.g. 'FFV1', 'MJPG')")
        self.size = size
        self.frames = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _temporary(self.path)
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter.fourcc(*codec), fps, size)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise MediaError(f"{self.path}: OpenCV cannot open a {codec} writer at {fps} fps, size {size}")

    def write(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if (width, height) != self.size or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise MediaError(f"{self.path}: frame {frame.shape} {frame.dtype} received; the video takes "
                             f"{self.size[1]} x {self.size[0]} x 3 uint8 frames")
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        self._writer.release()
        if self._tmp.exists():
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.release()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
