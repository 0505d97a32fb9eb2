"""Test media made on the fly: small videos with an audio track (PyAV), images with an EXIF
orientation or an ICC profile (Pillow), and a tiny file system for a full or read-only disk."""
from __future__ import annotations

import contextlib
import io as _io
import subprocess
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms


def video_frame(index: int, width: int, height: int) -> np.ndarray:
    """A smooth BGR frame that changes with ``index`` (so frames can be told apart)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 128 + 100 * np.sin((x + 3 * index) / 7.0) * np.cos(y / 5.0)
    return np.dstack([base, np.roll(base, index, axis=1), 255 - base]).clip(0, 255).astype(np.uint8)


def make_video(path: Path, frames: int = 10, size: tuple[int, int] = (64, 48), rate: int = 12,
               codec: str = "mpeg4", pixel_format: str = "yuv420p", audio: str | None = "aac",
               rotation: int = 0) -> None:
    """A video of ``frames`` frames of ``size`` (width, height) at ``rate`` fps, with a mono
    8 kHz sine tone in ``audio`` (None: no audio) as long as the video."""
    import av  # imported here: machines without PyAV still collect the tests that make no video
    width, height = size
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=Fraction(rate))
        video.width, video.height, video.pix_fmt = width, height, pixel_format
        if rotation:
            video.set_display_rotation(rotation)
        sound = None
        if audio is not None:
            sound = out.add_stream(audio, rate=8000 if audio != "libopus" else 48000)
            sound.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(video_frame(i, width, height), format="bgr24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if sound is not None:
            sample_rate = sound.codec_context.sample_rate
            samples = sample_rate * frames // rate
            wave = (np.sin(2 * np.pi * 440 * np.arange(samples) / sample_rate) * 0.3 * 32767).astype(np.int16)
            for start in range(0, samples, 960):
                chunk = av.AudioFrame.from_ndarray(wave[None, start:start + 960], format="s16", layout="mono")
                chunk.sample_rate, chunk.pts = sample_rate, start
                out.mux(sound.encode(chunk))
            out.mux(sound.encode())


def decoded_frames(path: Path) -> list[np.ndarray]:
    import av  # imported here: machines without PyAV still collect the tests that make no video
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def audio_packets(path: Path) -> list[bytes]:
    """The bytes of every audio packet of a file, in order."""
    import av  # imported here: machines without PyAV still collect the tests that make no video
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def pillow_bytes(array: np.ndarray, fmt: str, **options) -> bytes:
    """An RGB(A) uint8 array as a file of Pillow format ``fmt`` ("PNG", "JPEG") with ``options``
    (exif=..., icc_profile=..., quality=...)."""
    buffer = _io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _tmpfs_mount_error() -> str | None:
    """Why this process cannot mount a tmpfs (not root, no CAP_SYS_ADMIN, no mount), None where it can."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", folder],
                                     capture_output=True, text=True)
        except OSError as exc:
            return str(exc)
        if mounted.returncode != 0:
            return mounted.stderr.strip() or f"mount exited with {mounted.returncode}"
        subprocess.run(["umount", folder], check=False)
    return None


_MOUNT_ERROR = _tmpfs_mount_error()
# The tests on a real full or read-only disk: they run where a tmpfs can be mounted (CI does).
needs_tmpfs = pytest.mark.skipif(_MOUNT_ERROR is not None,
                                 reason=f"cannot mount a tmpfs here ({_MOUNT_ERROR}); needs root or CAP_SYS_ADMIN")


@contextlib.contextmanager
def tiny_filesystem(folder: Path, size: str = "64k", read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs mounted at ``folder`` (a real full disk, or a read-only one); tests that use
    it are marked :data:`needs_tmpfs`."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"mount -t tmpfs -o {options} failed: {mounted.stderr.strip()}"
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
