"""The runtime's named errors: each says what was received and what to do.

All derive from :class:`DeblurError`, and also from the builtin a caller would expect
(``TypeError`` for a wrong type or dtype, ``ValueError`` for a wrong value), so both
``except DeblurError`` and ``except ValueError`` work. After any of them the
:class:`~runtime.Deblurrer` is intact and takes the next frame.
"""
from __future__ import annotations


class DeblurError(Exception):
    """Base of every error the runtime raises on purpose."""


class FrameTypeError(DeblurError, TypeError):
    """The frame is not an array type or dtype the runtime takes."""


class FrameValueError(DeblurError, ValueError):
    """The frame has the wrong shape, is empty, holds NaN/Inf or values outside [0, 1]."""


class TilingRequired(DeblurError, ValueError):
    """The frame exceeds what the engines take whole, and tiling was disabled (``tile=0``)."""


class NonFiniteOutput(DeblurError, ValueError):
    """The engines produced NaN or Inf for a finite input (typically an FP16 overflow)."""


class BackendError(DeblurError, RuntimeError):
    """No backend could be opened, or ``strict=True`` refused a fallback."""
