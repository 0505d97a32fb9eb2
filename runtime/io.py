"""Reading and writing images, folders and videos, for the CLI and the corpus workers.

Images: OpenCV decodes the pixels as the file holds them (``IMREAD_UNCHANGED``: grayscale, BGR,
BGRA; 8 bits as uint8, 16 bits as float32 in [0, 1]); Pillow reads the metadata OpenCV skips
with that flag: the EXIF orientation, applied so the frame is upright, and the ICC profile,
written back into PNG, JPEG and WebP outputs (:func:`write_image` says in its notes what a
format could not keep: 16 bits in a JPEG, an ICC profile in a TIFF).

Videos: PyAV (FFmpeg) decodes and encodes, because OpenCV's writer cuts odd sizes to even ones
and cannot carry audio. :class:`VideoReader` gives the frames and the container's own frame
count; :class:`VideoWriter` writes frames of any size at the source's rate (codec by suffix,
:data:`FOURCC`, or named: ``FFV1`` is lossless) and copies the source's audio and subtitle
packets unchanged, with a note for each stream the output container cannot hold.

Every write goes to a temporary name beside the output, then ``os.replace``: an interrupted job
never leaves a half-written file under the final name. Temporary names are ``.STEM.XXXXXXXX.SUFFIX``
(the stem shortened to fit the file system's NAME_MAX); :func:`temporaries_of` finds what a
killed job left, and :func:`list_images` skips them (they are hidden).
"""
from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Formats OpenCV writes with 16 bits per channel, with an alpha channel, with an ICC profile
# (cv2.imencodeWithMetadata, OpenCV >= 4.12; measured: it drops the profile of a TIFF).
DEEP_SUFFIXES = (".png", ".tif", ".tiff")
ALPHA_SUFFIXES = (".png", ".tif", ".tiff", ".webp", ".bmp")
ICC_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# The default codec of each video suffix, as a four-character code (OpenCV's names, which
# --video-codec takes too); CODECS gives the FFmpeg encoder and pixel format of each.
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
VIDEO_SUFFIXES = tuple(FOURCC)
ROTATION_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")  # containers with a display matrix (AVI has none)
CODECS = {"mp4v": ("mpeg4", "yuv420p"), "MJPG": ("mjpeg", "yuvj420p"), "FFV1": ("ffv1", "bgr0")}
# Lossy encoders at constant quality 2 (FFmpeg's -q:v 2, lambda = 2 * FF_QP2LAMBDA): measured on
# smooth 160x120 frames, the same PSNR as OpenCV's writer gave with its bit rate (29.0 dB mp4v,
# 29.5 dB MJPG, both limited by 4:2:0 chroma), whatever the size or frame rate.
CONSTANT_QUALITY = {"flags": "+qscale", "global_quality": str(2 * 118)}
UINT16_MAX = 65535.0
TEMPORARY_RANDOM = 8  # characters tempfile.mkstemp puts between prefix and suffix
EXIF_ORIENTATION = 0x0112

Kind = Literal["image", "folder", "video"]


class MediaError(OSError):
    """A file could not be read or written; the message names the file and the cause."""


def _read_umask() -> int:
    # Read once, while the module is imported: os.umask sets the mask to read it, and a thread
    # creating a file in between would get the wrong mode.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


FILE_MODE = 0o666 & ~_read_umask()  # what open(path, "w") gives; mkstemp's 0600 would hide outputs from others


def describe_os_error(exc: OSError, path: str | Path, doing: str = "writing") -> str:
    """One line for an OSError met ``doing`` something to ``path``: the cause in words, the errno
    name, and what to do where there is something to do."""
    code = exc.errno
    name = errno.errorcode.get(code, str(code)) if code is not None else ""
    if code == errno.ENOSPC:
        return f"disk full (ENOSPC) {doing} {path}: free space on that file system or write elsewhere"
    if code == errno.EDQUOT:
        return f"disk quota exceeded (EDQUOT) {doing} {path}"
    if code == errno.EROFS:
        return f"read-only file system (EROFS) {doing} {path}: write elsewhere"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied ({name}) {doing} {path}"
    if code == errno.EISDIR:
        return f"{path} is a folder ({name}); it cannot be replaced by a file: remove or rename it"
    if code in (errno.ENOTDIR, errno.EEXIST) and doing == "writing":
        return f"a parent of {path} is a file, not a folder ({name})"
    if code == errno.ENAMETOOLONG:
        return f"file name too long for the file system (ENAMETOOLONG) {doing} {path}"
    if code == errno.ENOENT:
        return f"{path} does not exist (ENOENT)"
    reason = exc.strerror or str(exc)
    return f"{reason} ({name}) {doing} {path}" if name else f"{reason} {doing} {path}"


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
    """Image files directly in ``folder`` (by suffix), sorted by name. Hidden names (a leading
    ".", such as the temporary files of a killed run) and folders are left out; a broken link
    is kept, so that it is reported rather than silently skipped."""
    found = []
    for path in Path(folder).iterdir():
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_file() or (path.is_symlink() and not path.exists()):
            found.append(path)
    return sorted(found)


# ------------------------------------------------------------------------- temporary names


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):  # no such folder yet, or no limit reported
        return 255


def _temporary_stem(path: Path) -> str:
    """``path``'s stem, shortened (whole characters) so ``.STEM.XXXXXXXX.SUFFIX`` fits NAME_MAX bytes."""
    room = _name_max(path.parent) - len(os.fsencode(path.suffix)) - TEMPORARY_RANDOM - 2
    kept, used = [], 0
    for char in path.stem:
        size = len(os.fsencode(char))
        if used + size > room:
            break
        kept.append(char)
        used += size
    return "".join(kept)


def temporary_path(path: Path) -> Path:
    """A new empty file beside ``path`` to write it under: ``.STEM.XXXXXXXX.SUFFIX``."""
    fd, name = tempfile.mkstemp(prefix=f".{_temporary_stem(path)}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(name, FILE_MODE)
    return Path(name)


def temporaries_of(path: str | Path) -> list[Path]:
    """The temporary files that writes of ``path`` left behind (a job killed mid-write): the
    names :func:`temporary_path` makes, beside ``path``."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stem = re.escape(_temporary_stem(path))
    pattern = re.compile(rf"\.{stem}\.[a-z0-9_]{{{TEMPORARY_RANDOM}}}{re.escape(path.suffix)}")
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent is a file (FileExistsError / NotADirectoryError), or no permission
        raise MediaError(describe_os_error(exc, path)) from exc


def write_file(path: str | Path, data: bytes) -> None:
    """``data`` under ``path``, atomically (a temporary name beside it, then ``os.replace``).
    MediaError with the cause in words (disk full, a folder in the way, ...)."""
    path = Path(path)
    _make_parent(path)
    try:
        tmp = temporary_path(path)
    except OSError as exc:
        raise MediaError(describe_os_error(exc, path)) from exc
    try:
        with open(tmp, "wb") as stream:
            stream.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise MediaError(describe_os_error(exc, path)) from exc
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Image:
    """A frame read from a file, upright, and what to write it back with."""

    frame: np.ndarray  # H x W (gray), H x W x 3 (BGR) or H x W x 4 (BGRA); uint8 or float32 in [0, 1]
    bits: int  # 8 or 16
    icc: bytes | None = None  # the file's ICC profile


def read_image(path: str | Path) -> Image:
    """Read an image file (BGR order, upright); MediaError if it cannot be read or decoded."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MediaError(describe_os_error(exc, path, "reading")) from exc
    return decode_image(data, str(path))


def decode_image(data: bytes, name: str) -> Image:
    """:func:`read_image` for the bytes of an image file (fetched from a URI); ``name`` is for messages."""
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if frame is None:
        raise MediaError(f"{name}: OpenCV cannot read it as an image ({len(data)} bytes: empty, corrupt or "
                         "of another type)")
    if frame.dtype not in (np.uint8, np.uint16):
        raise MediaError(f"{name}: pixel type {frame.dtype} is not supported; expected 8- or 16-bit")
    orientation, icc = _metadata(data)
    if orientation is not None:
        frame = _upright(frame, orientation)
    if frame.dtype == np.uint16:
        return Image(frame.astype(np.float32) / UINT16_MAX, 16, icc)
    return Image(np.ascontiguousarray(frame), 8, icc)


def _metadata(data: bytes) -> tuple[int | None, bytes | None]:
    """(EXIF orientation, ICC profile) of an image file's bytes, from its header; (None, None)
    where Pillow does not know the format (OpenCV decoded the pixels, so the file is an image)."""
    import io as _io

    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(_io.BytesIO(data)) as image:
            orientation = image.getexif().get(EXIF_ORIENTATION)
            icc = image.info.get("icc_profile") or None
    except (UnidentifiedImageError, PILImage.DecompressionBombError, OSError, SyntaxError, ValueError):
        return None, None
    return (int(orientation) if isinstance(orientation, int) else None), icc


def _upright(frame: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 2..8 (TIFF 6.0 tag 274: where row 0 / column 0 lie) as Pillow's
    ImageOps.exif_transpose does, on an H x W (x C) array of any dtype."""
    if orientation == 2:
        return frame[:, ::-1]
    if orientation == 3:
        return frame[::-1, ::-1]
    if orientation == 4:
        return frame[::-1]
    if orientation == 5:
        return frame.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(frame, -1)
    if orientation == 7:
        return frame[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(frame, 1)
    return frame  # 1, or a value outside the standard: as stored


def encode_image(suffix: str, frame: np.ndarray, bits: int = 8, icc: bytes | None = None) -> tuple[bytes, list[str]]:
    """The bytes of an image file of type ``suffix`` (".png", ...) and notes on what the format
    could not keep. ``frame``: uint8, uint16, or float32 in [0, 1] (written with ``bits``)."""
    suffix = suffix.lower()
    notes: list[str] = []
    deep = bits == 16 or frame.dtype == np.uint16
    if deep and suffix not in DEEP_SUFFIXES:
        notes.append(f"written with 8 bits per channel ({suffix} holds no 16-bit images; .png or .tif would)")
        deep = False
    if frame.dtype == np.float32:
        scale = UINT16_MAX if deep else 255.0
        frame = np.round(np.clip(frame, 0.0, 1.0) * scale).astype(np.uint16 if deep else np.uint8)
    elif frame.dtype == np.uint16 and not deep:
        frame = np.round(frame / 257.0).astype(np.uint8)
    if frame.ndim == 3 and frame.shape[2] == 4 and suffix not in ALPHA_SUFFIXES:
        notes.append(f"alpha channel dropped ({suffix} holds none)")
    if icc and suffix in ICC_SUFFIXES and hasattr(cv2, "imencodeWithMetadata"):
        ok, buffer = cv2.imencodeWithMetadata(suffix, frame, [cv2.IMAGE_METADATA_ICCP], [np.frombuffer(icc, np.uint8)])
    else:
        if icc:
            why = ("OpenCV writes ICC profiles into .png, .jpg and .webp only" if suffix not in ICC_SUFFIXES
                   else f"OpenCV {cv2.__version__} cannot write ICC profiles (4.12 and later can)")
            notes.append(f"ICC profile not kept: {why}; colours may look different in colour-managed viewers")
        ok, buffer = cv2.imencode(suffix, frame)
    if not ok:
        raise MediaError(f"OpenCV could not encode a {frame.dtype} image of shape {frame.shape} as {suffix}")
    return buffer.tobytes(), notes


def write_image(path: str | Path, frame: np.ndarray, bits: int = 8, icc: bytes | None = None) -> list[str]:
    """Write ``frame`` (uint8, or float32 in [0, 1]) atomically; 16-bit when ``bits == 16`` and
    the format allows; ``icc`` embedded where the format allows. Returns notes on what was not
    kept. MediaError names the cause (disk full, a folder in the way, an encoding failure)."""
    path = Path(path)
    try:
        data, notes = encode_image(path.suffix, frame, bits, icc)
    except MediaError as exc:
        raise MediaError(f"{path}: {exc}") from exc
    write_file(path, data)
    return notes


# ---------------------------------------------------------------------------------- videos


def _av() -> Any:
    import av  # PyAV: FFmpeg's decoders, encoders and muxers (see the module docstring)

    return av


def _duration_tag(text: str) -> float | None:
    """Seconds of a Matroska DURATION tag ("HH:MM:SS.nnnnnnnnn"), None if absent or malformed."""
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", text.strip())
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


class VideoReader:
    """Frames of a video file as H x W x 3 uint8 BGR arrays, in order, as stored.

    From the file: ``rate`` (a Fraction) and ``fps``, ``size`` (width, height), ``rotation``
    (degrees counter-clockwise a player turns the frames: phone videos), ``frame_count`` and
    ``frame_count_basis`` (how it is known: "declared", estimated from the "duration" or the
    "container duration", or "none" with a count of 0). From reading it: ``frames_read``, ``damaged_packets`` (packets the
    decoder refused, or where the file broke off) and ``times`` (each frame's time in seconds,
    None where the file gives none). Packets of the other streams go to ``packet_sink`` when one
    is set (:class:`VideoWriter` sets it to copy them). Use as a context manager or call ``close``.
    """

    def __init__(self, path: str | Path):
        av = _av()
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as exc:
            raise MediaError(f"{self.path}: cannot open it as a video ({exc})") from exc
        try:
            if not self._container.streams.video:
                raise MediaError(f"{self.path}: holds no video stream")
            self.stream = self._container.streams.video[0]
            self.stream.thread_type = "AUTO"  # frame and slice threads, so that decoding keeps up
            rate = self.stream.average_rate or self.stream.guessed_rate or Fraction(25)
            self.rate = Fraction(rate).limit_denominator(1001)
            self.fps = float(self.rate)
            self.frame_count, self.frame_count_basis = self._declared_count()
            self.other_streams = [s for s in self._container.streams if s.index != self.stream.index]
            self.packet_sink: Callable[[Any], None] | None = None
            self.frames_read = 0
            self.damaged_packets = 0
            self.times: list[float | None] = []
            # Decode up to the first frame now, so that its real size and rotation are known
            # before a writer is made; other streams' packets met on the way wait for the sink.
            self._held: list[Any] | None = []
            self._frames = self._decode()
            self._first = next(self._frames, None)
            codec = self.stream.codec_context
            self.size = (self._first.width, self._first.height) if self._first else (codec.width, codec.height)
            self.rotation = int(getattr(self._first, "rotation", 0) or 0)
        except BaseException:
            self._container.close()
            raise

    def _declared_count(self) -> tuple[int, str]:
        """(frame count, basis): "declared" by the container (AVI, MP4, or Matroska's
        NUMBER_OF_FRAMES tag), else estimated from the stream's "duration", else from the
        "container duration" (which spans every stream: audio may run longer), else (0, "none")."""
        tag = self.stream.metadata.get("NUMBER_OF_FRAMES", "")
        if self.stream.frames or tag.isdigit():
            return int(self.stream.frames or tag), "declared"
        seconds = _duration_tag(self.stream.metadata.get("DURATION", ""))
        if seconds is None and self.stream.duration is not None and self.stream.time_base is not None:
            seconds = float(self.stream.duration * self.stream.time_base)
        if seconds is not None:
            return round(seconds * self.fps), "duration"
        if self._container.duration is not None:
            return round(self._container.duration / 1_000_000 * self.fps), "container duration"  # AV_TIME_BASE units
        return 0, "none"

    def _decode(self) -> Iterator[Any]:
        av = _av()
        packets = self._container.demux()
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError:  # the container breaks off (a truncated file): the end
                self.damaged_packets += 1
                return
            if packet.stream.index != self.stream.index:
                if packet.dts is None:  # the demuxer's empty flush packets carry nothing to copy
                    continue
                if self.packet_sink is not None:
                    self.packet_sink(packet)
                elif self._held is not None:
                    self._held.append(packet)
                continue
            try:
                frames = packet.decode()
            except av.FFmpegError:  # a damaged packet: counted; the frames after it still come
                self.damaged_packets += 1
                continue
            yield from frames

    def __iter__(self) -> Iterator[np.ndarray]:
        held, self._held = self._held or [], None
        if self.packet_sink is not None:
            for packet in held:
                self.packet_sink(packet)
        first, self._first = self._first, None
        if first is not None:
            yield self._array(first)
        for frame in self._frames:
            yield self._array(frame)

    def _array(self, frame: Any) -> np.ndarray:
        self.frames_read += 1
        self.times.append(frame.time)
        return frame.to_ndarray(format="bgr24")

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """Writes H x W x 3 uint8 BGR frames of one size (odd sizes too) to a video, atomically on ``close``.

    The codec is ``fourcc`` (a key of :data:`CODECS`: "mp4v", "MJPG", "FFV1" (lossless)) or, by
    default, the suffix's (:data:`FOURCC`). Frames are timed at ``fps``, or at the times given
    to :meth:`write`. With a ``source`` reader, the output takes its rate and rotation, and its
    audio and subtitle packets are copied unchanged as they are read; ``notes`` names each stream
    that could not be copied. If the job fails (``abort``, or an exception inside ``with``), the
    partial file is removed and the final name is untouched.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], fourcc: str | None = None,
                 source: VideoReader | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC:
            raise MediaError(f"{self.path}: unknown video suffix {suffix!r}; expected one of {list(FOURCC)}")
        self.codec = FOURCC[suffix] if fourcc is None else fourcc
        if self.codec not in CODECS:
            raise MediaError(f"{self.path}: codec {self.codec!r} is not one of {list(CODECS)} "
                             "(FFV1 is lossless, in .avi or .mkv)")
        self.size = (int(size[0]), int(size[1]))
        self.rate = source.rate if source is not None else Fraction(fps).limit_denominator(1001)
        self.frames = 0
        self.notes: list[str] = []
        self._last_pts = -1
        self._copied: dict[int, Any] = {}
        _make_parent(self.path)
        try:
            self._tmp = temporary_path(self.path)
        except OSError as exc:
            raise MediaError(describe_os_error(exc, self.path)) from exc
        self._container: Any = None
        try:
            self._open(source)
        except BaseException:
            self._discard()
            raise

    def _open(self, source: VideoReader | None) -> None:
        """Open the temporary file, add the video stream and, from ``source``, the streams to
        copy, and write the header now: a stream the muxer refuses is known before any frame.
        If it refuses the copied streams, the video goes on alone, with a note."""
        av = _av()
        copy = source is not None
        while True:
            self._container = av.open(str(self._tmp), "w")
            self._add_video_stream(source)
            if copy:
                self._copy_streams(source)  # type: ignore[arg-type]
            try:
                self._container.start_encoding()
                break
            except av.FFmpegError as exc:
                self._container.close()
                if not self._copied:
                    raise MediaError(f"{self.path}: FFmpeg cannot write {self.codec} video at {float(self.rate):g} "
                                     f"fps, size {self.size[0]} x {self.size[1]}: {exc}") from exc
                names = ", ".join(f"stream {i}" for i in self._copied)
                self.notes.append(f"{names} of the source not copied: the {self.path.suffix} muxer refused them "
                                  f"({exc}); .mkv holds almost any stream")
                self._copied, copy = {}, False
        if self._copied:
            source.packet_sink = self._copy_packet  # type: ignore[union-attr]

    def _add_video_stream(self, source: VideoReader | None) -> None:
        encoder, pixel_format = CODECS[self.codec]
        try:
            self._stream = self._container.add_stream(encoder, rate=self.rate)
        except ValueError as exc:  # the container format cannot hold this codec
            raise MediaError(f"{self.path}: a {self.path.suffix} file cannot hold {self.codec} video ({exc}); "
                             "pick another codec or suffix (FFV1 goes in .avi or .mkv)") from exc
        self._stream.width, self._stream.height = self.size
        self._stream.pix_fmt = pixel_format
        self._stream.codec_context.time_base = 1 / self.rate
        if encoder != "ffv1":
            self._stream.codec_context.options = dict(CONSTANT_QUALITY)
        if source is not None and source.rotation:
            if self.path.suffix.lower() in ROTATION_SUFFIXES:
                self._stream.set_display_rotation(source.rotation)  # frames stay as stored; players turn them
            elif not any("rotation" in note for note in self.notes):
                self.notes.append(f"rotation {source.rotation} degrees not kept: {self.path.suffix} cannot carry "
                                  f"it, players will show the frames as stored; use one of {list(ROTATION_SUFFIXES)}")

    def _copy_streams(self, source: VideoReader) -> None:
        """An output stream for each of the source's audio and subtitle streams (packets copied,
        not re-encoded); a note for each stream left out."""
        av = _av()
        for stream in source.other_streams:
            codec = stream.codec_context.name if stream.codec_context is not None else "unknown codec"
            what = f"{stream.type} stream {stream.index} ({codec})"
            if stream.type == "video":
                self.notes.append(f"{what} not copied: only the first video stream is deblurred")
            elif stream.type not in ("audio", "subtitle"):
                self.notes.append(f"{what} not copied: {stream.type} streams are not carried over")
            else:
                try:
                    self._copied[stream.index] = self._container.add_stream_from_template(stream)
                except (ValueError, av.FFmpegError) as exc:
                    self.notes.append(f"{what} not copied: a {self.path.suffix} file cannot hold it ({exc}); "
                                      ".mkv holds almost any stream")

    def _copy_packet(self, packet: Any) -> None:
        stream = self._copied.get(packet.stream.index)
        if stream is not None:
            packet.stream = stream  # the muxer rescales its timestamps to the output stream's time base
            self._mux(packet)

    def _mux(self, packets: Any) -> None:
        av = _av()
        try:
            self._container.mux(packets)
        except av.FFmpegError as exc:
            if exc.errno in errno.errorcode:
                raise MediaError(describe_os_error(exc, self.path)) from exc
            raise MediaError(f"{self.path}: FFmpeg could not write a packet: {exc}") from exc

    def write(self, frame: np.ndarray, time: float | None = None) -> None:
        """Append one frame, shown at ``time`` seconds (the source's) or right after the last one."""
        height, width = frame.shape[:2]
        if (width, height) != self.size or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise MediaError(f"{self.path}: frame {frame.shape} {frame.dtype} received; the video takes "
                             f"{self.size[1]} x {self.size[0]} x 3 uint8 frames")
        video_frame = _av().VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        # pts in units of 1 / rate: the source's time where known (copied audio stays in sync and
        # a damaged frame's gap stays a gap), and always increasing (encoders refuse a repeat).
        pts = self._last_pts + 1 if time is None else max(round(time * self.rate), self._last_pts + 1)
        video_frame.pts = self._last_pts = pts
        self._mux(self._stream.encode(video_frame))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder, finish the file and move it to its final name."""
        try:
            self._mux(self._stream.encode(None))
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
        except MediaError:
            self._discard()
            raise
        except (OSError, _av().FFmpegError) as exc:  # the trailer or the rename failed: a full disk, ...
            self._discard()
            if getattr(exc, "errno", None) in errno.errorcode:
                raise MediaError(describe_os_error(exc, self.path)) from exc  # type: ignore[arg-type]
            raise MediaError(f"{self.path}: FFmpeg could not finish the file: {exc}") from exc
        except BaseException:
            self._discard()
            raise

    def abort(self) -> None:
        """Drop the partial file; the final name is left as it was."""
        self._discard()

    def _discard(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except _av().FFmpegError:  # closing a broken file fails too; the file is removed below
                pass
            self._container = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
