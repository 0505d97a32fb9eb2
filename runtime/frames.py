"""Frames as pipelines hold them, to and from the model's (B, 3, H, W) float32 RGB device tensors.

Accepted frames (``H``, ``W`` >= 1, any size; ``N`` >= 1):

==========================  ==========================================================
``H x W x 3``               colour, BGR by default (OpenCV), RGB with ``color="rgb"``
``H x W x 4``               colour + alpha (BGRA/RGBA); the alpha comes back unchanged
``H x W`` / ``H x W x 1``   grayscale: run as three equal channels, returned as the mean
                            of the three output channels, in the input's layout
``N x H x W x C``           a batch of equal-size frames, C in {1, 3, 4}
==========================  ==========================================================

each as a numpy array, a torch tensor (CPU or CUDA) or a CuPy array (wrapped through DLPack
without a copy; CuPy is never imported unless a CuPy array comes in), of dtype ``uint8``
(0..255) or ``float32`` (in [0, 1]). The output has the input's type, device, layout and
dtype: uint8 rounded to nearest, float32 clamped to [0, 1].

The conversion is split so that the video path can run it on device buffers it owns:
:func:`inspect_frame` (host-side checks, no data touched), :func:`as_nhwc` (a zero-copy
``(B, H, W, C)`` torch view), :func:`to_model` / :func:`from_model` (on device) and
:func:`restore` (back to the caller's type and layout).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from runtime.errors import FrameTypeError, FrameValueError

COLORS = ("bgr", "rgb")
DTYPES = ("uint8", "float32")
# Float frames may stray this far outside [0, 1] (rounding in upstream arithmetic) before they
# are refused as "not in [0, 1]" (the usual cause: a 0..255 float image).
FLOAT_RANGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class FrameSpec:
    """What a frame is, read from its metadata only (no data touched, no device sync).

    ``kind``: "numpy", "torch" or "cupy"; ``batch``: None for a single frame;
    ``channels``: 1, 3 or 4; ``channel_axis``: False for an H x W (or N x H x W) grayscale
    frame; ``device``: where the frame lives ("cpu" for numpy).
    """

    kind: str
    dtype: str
    height: int
    width: int
    channels: int
    batch: int | None
    channel_axis: bool
    device: str

    @property
    def frames(self) -> int:
        return 1 if self.batch is None else self.batch

    @property
    def group_key(self) -> tuple[Any, ...]:
        """Frames with the same key can be stacked into one batch."""
        return (self.kind, self.dtype, self.height, self.width, self.channels, self.channel_axis, self.device)

    def describe(self) -> str:
        shape = ((self.batch,) if self.batch is not None else ()) + (self.height, self.width)
        if self.channel_axis:
            shape += (self.channels,)
        return f"{self.kind} {self.dtype} array of shape {shape} on {self.device}"


def _kind_of(frame: Any) -> str | None:
    if isinstance(frame, np.ndarray):
        return "numpy"
    if isinstance(frame, torch.Tensor):
        return "torch"
    if type(frame).__module__.split(".")[0] == "cupy" and hasattr(frame, "__dlpack__"):
        return "cupy"
    return None


def _dtype_name(frame: Any, kind: str) -> str:
    if kind == "torch":
        return str(frame.dtype).removeprefix("torch.")
    return str(np.dtype(frame.dtype))


def inspect_frame(frame: Any, what: str = "frame") -> FrameSpec:
    """Check a single frame or an array batch; raise FrameTypeError / FrameValueError otherwise.

    ``what`` names the frame in messages (e.g. "frame 3 of the list").
    """
    if frame is None:
        raise FrameValueError(
            f"{what} is None; cv2.imread returns None for a missing or unreadable file: check the path"
        )
    kind = _kind_of(frame)
    if kind is None:
        raise FrameTypeError(
            f"{what} is a {type(frame).__module__}.{type(frame).__name__}; expected a numpy array, a torch "
            "tensor or a CuPy array of shape H x W x 3 (or a list of them)"
        )
    dtype = _dtype_name(frame, kind)
    if dtype not in DTYPES:
        hint = "scale to [0, 1] and convert with .astype(np.float32)" if "float" in dtype or "int" in dtype else ""
        raise FrameTypeError(f"{what} has dtype {dtype}; expected uint8 (0..255) or float32 (0..1)"
                             + (f": {hint}" if hint else ""))
    shape = tuple(int(s) for s in frame.shape)
    batch: int | None = None
    channel_axis = True
    if len(shape) == 2:
        (h, w), c, channel_axis = shape, 1, False
    elif len(shape) == 3 and shape[-1] in (1, 3, 4):
        h, w, c = shape
    elif len(shape) == 4 and shape[-1] in (1, 3, 4):
        batch, h, w, c = shape
    elif len(shape) in (3, 4) and shape[-3 if len(shape) == 4 else 0] in (1, 3, 4):
        raise FrameValueError(
            f"{what} has shape {shape}, which looks channels-first; expected channels last "
            "(H x W x C or N x H x W x C): transpose it, e.g. frame.transpose(1, 2, 0)"
        )
    else:
        raise FrameValueError(
            f"{what} has shape {shape}; expected H x W x 3 (colour), H x W x 4 (with alpha), H x W "
            "(grayscale) or N x H x W x C (a batch); pass a list for a batch of grayscale frames"
        )
    if h < 1 or w < 1 or (batch is not None and batch < 1):
        raise FrameValueError(f"{what} is empty (shape {shape}); expected H, W (and N) >= 1")
    device = str(frame.device) if kind == "torch" else ("cpu" if kind == "numpy" else f"cuda:{frame.device.id}")
    return FrameSpec(kind, dtype, h, w, c, batch, channel_axis, device)


def as_nhwc(frame: Any, spec: FrameSpec) -> torch.Tensor:
    """The frame as a ``(B, H, W, C)`` torch tensor where it lives, without copying when the
    memory allows (numpy arrays with negative strides or read-only memory are copied once)."""
    if spec.kind == "numpy":
        if not frame.flags.writeable:  # torch.from_numpy cannot wrap read-only memory
            frame = frame.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(frame))
    elif spec.kind == "cupy":
        tensor = torch.from_dlpack(frame)
    else:
        tensor = frame.detach()
    if not spec.channel_axis:
        tensor = tensor.unsqueeze(-1)
    if spec.batch is None:
        tensor = tensor.unsqueeze(0)
    return tensor


def to_model(raw: torch.Tensor, spec: FrameSpec, color: str) -> torch.Tensor:
    """``(B, H, W, C)`` uint8/float32 (on the compute device) -> ``(B, 3, H, W)`` float32 RGB.

    Values are not checked here (that would synchronise); the Deblurrer checks them on device.
    """
    x = raw[..., :3] if spec.channels >= 3 else raw.expand(*raw.shape[:-1], 3)
    x = x.permute(0, 3, 1, 2)
    x = x.to(torch.float32).div_(255.0) if spec.dtype == "uint8" else x.to(torch.float32)
    if color == "bgr" and spec.channels >= 3:
        x = x.flip(1)
    return x.contiguous()


def from_model(sharp: torch.Tensor, raw: torch.Tensor, spec: FrameSpec, color: str) -> torch.Tensor:
    """``(B, 3, H, W)`` float32 RGB in [0, 1] -> ``(B, H, W, C)`` in the frame's dtype and channel
    order, on ``sharp``'s device. The alpha channel (C = 4) is copied from ``raw`` unchanged."""
    y = sharp
    if spec.channels == 1:
        y = y.mean(dim=1, keepdim=True)
    elif color == "bgr":
        y = y.flip(1)
    y = y.permute(0, 2, 3, 1)
    if spec.dtype == "uint8":
        y = y.mul(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
    if spec.channels == 4:
        y = torch.cat([y, raw[..., 3:].to(y.device, non_blocking=True)], dim=-1)
    return y.contiguous()


def restore(out: torch.Tensor, spec: FrameSpec) -> Any:
    """``(B, H, W, C)`` -> the caller's type, device and layout (the inverse of :func:`as_nhwc`)."""
    if spec.batch is None:
        out = out[0]
    if not spec.channel_axis:
        out = out[..., 0]
    if spec.kind == "numpy":
        return out.cpu().numpy()
    out = out.to(spec.device)
    if spec.kind == "cupy":
        import cupy  # the input was a CuPy array, so CuPy is importable

        return cupy.from_dlpack(out)
    return out


def nhwc_from_model_shape(spec: FrameSpec) -> tuple[int, int, int, int]:
    """The ``(B, H, W, C)`` shape :func:`from_model` returns for frames of ``spec``."""
    return (spec.frames, spec.height, spec.width, spec.channels)
