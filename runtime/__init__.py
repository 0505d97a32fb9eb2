"""Deblur frames with HI-Diff: ``runtime.deblur(frame)`` or a :class:`Deblurrer` kept loaded.

    import cv2, runtime
    sharp = runtime.deblur(cv2.imread("blurry.png"), engines="artifacts/")   # BGR uint8 in and out

    with runtime.Deblurrer(engines="artifacts/", device=0) as deblurrer:
        print(deblurrer.backend, deblurrer.backend_reason)
        for sharp in deblurrer.stream(frames):   # a video, same z_T for every frame
            ...

Frame types and layouts: :mod:`runtime.frames`; backend choice: :mod:`runtime.selection`; the
inference chain and the tiling of large frames: :mod:`engines.pipeline`; how the PyTorch backend
runs the model: :mod:`engines.torch_settings`; the command line: ``python -m runtime --help``.
``import runtime`` imports no backend library; the chosen one loads when a Deblurrer opens.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from runtime.deblurrer import Deblurrer
from runtime.errors import (
    BackendError,
    DeblurError,
    FrameTypeError,
    FrameValueError,
    NonFiniteOutput,
    TilingRequired,
)

__all__ = ["deblur", "Deblurrer", "clear_cache", "DeblurError", "FrameTypeError", "FrameValueError",
           "TilingRequired", "NonFiniteOutput", "BackendError"]

# Deblurrers kept by runtime.deblur, one per distinct set of options, oldest closed first.
CACHE_SIZE = 2
_cache: OrderedDict[tuple[Any, ...], Deblurrer] = OrderedDict()
_lock = threading.Lock()


def _key_part(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _key_part(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_key_part(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))  # an unhashable object (a model): the same object, the same Deblurrer
    return value


def deblur(frame: Any, **options: Any) -> Any:
    """Deblur ``frame`` with a Deblurrer made once per distinct ``options`` and kept loaded.

    ``frame``: H x W x 3 uint8 BGR (as OpenCV gives it) or any type of :mod:`runtime.frames`;
    the result has the same type, layout and dtype. ``options`` are :class:`Deblurrer`'s
    arguments (``engines=``, ``backend=``, ``device=``, ``color=``, ``tile=``, ...).
    """
    key = tuple(sorted((name, _key_part(value)) for name, value in options.items()))
    with _lock:
        deblurrer = _cache.get(key)
        if deblurrer is None:
            deblurrer = Deblurrer(**options)
            _cache[key] = deblurrer
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)[1].close()
        _cache.move_to_end(key)
    return deblurrer.deblur(frame)


def clear_cache() -> None:
    """Close and forget the Deblurrers that :func:`deblur` keeps."""
    with _lock:
        while _cache:
            _cache.popitem()[1].close()
