"""The CUDA runtime through cuda-python (``cuda.bindings.runtime``, cuda-bindings >= 12.6).

Streams, events, device and pinned host buffers and async copies: what the TensorRT backend and
the benchmarks need besides torch. Not pycuda: ``pycuda.autoinit`` creates its own context, which
breaks torch tensors in the same process (NVIDIA/TensorRT#4335); the runtime API used here works
on the primary context that torch uses too. Not the ``cuda.cudart`` module either: cuda-bindings
13 removed it.

``cuda.bindings`` is imported on first use, so ``import engines.cuda`` works on a machine without
the package, a driver or a GPU; calls there raise :class:`~engines.base.BackendUnavailable`.
Every failing runtime call raises :class:`CudaError` naming the call and CUDA's own message.
"""
from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from engines.base import BackendUnavailable

# Error names (cudaError_t members) that mean "no usable driver or GPU here", not "this call was wrong".
_UNAVAILABLE_ERRORS = (
    "cudaErrorNoDevice",
    "cudaErrorInsufficientDriver",
    "cudaErrorStubLibrary",
    "cudaErrorDevicesUnavailable",
    "cudaErrorSystemDriverMismatch",
    "cudaErrorCallRequiresNewerDriver",
    "cudaErrorInitializationError",
)


class CudaError(RuntimeError):
    """A CUDA runtime call failed. ``api`` is the call, ``code`` the ``cudaError_t`` value."""

    def __init__(self, api: str, code: int, name: str, description: str, hint: str = ""):
        self.api, self.code, self.name, self.description = api, code, name, description
        message = f"{api} failed: {name} ({code}): {description}"
        super().__init__(f"{message}; {hint}" if hint else message)


class NoCudaDevice(CudaError, BackendUnavailable):
    """The call failed because this machine has no usable CUDA driver or GPU."""


@functools.cache
def cudart() -> ModuleType:
    """``cuda.bindings.runtime``, imported once; BackendUnavailable if cuda-bindings is missing."""
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        raise BackendUnavailable(
            f"cuda-bindings is not importable ({exc}); install it with pip install 'cuda-bindings>=12.6' "
            "(the version matching your driver's CUDA major)"
        ) from exc
    return runtime


def check(result: Any, api: str = "CUDA runtime call") -> Any:
    """Unpack a cuda-bindings result tuple ``(cudaError_t, *values)``.

    Returns None, the single value, or a tuple of values. Raises :class:`NoCudaDevice` when the
    error means there is no driver or GPU, :class:`CudaError` for any other non-success code.
    """
    rt = cudart()
    err, values = result[0], tuple(result[1:])
    if err != rt.cudaError_t.cudaSuccess:
        raise _error(rt, api, err)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _error(rt: ModuleType, api: str, err: Any) -> CudaError:
    code = int(err)
    name = getattr(err, "name", f"cudaError_t({code})")
    try:
        status, text = rt.cudaGetErrorString(err)
        description = text.decode() if status == rt.cudaError_t.cudaSuccess else "no description"
    except Exception:  # the description is a courtesy: never hide the real error behind a second one
        description = "no description"
    if name in _UNAVAILABLE_ERRORS:
        hint = ("no usable CUDA driver or GPU on this machine: check nvidia-smi, or use a CPU backend "
                "(onnxruntime or pytorch)")
        return NoCudaDevice(api, code, name, description, hint)
    return CudaError(api, code, name, description)


def call(api: str, *args: Any) -> Any:
    """Call ``cudart.<api>(*args)`` and :func:`check` its result, so errors name the call."""
    return check(getattr(cudart(), api)(*args), api)


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: tuple[int, int]  # (major, minor), e.g. (9, 0) for H100
    total_memory: int  # bytes
    sm_count: int


def device_count() -> int:
    """Number of visible CUDA devices; raises BackendUnavailable when there is no driver or GPU."""
    count = int(call("cudaGetDeviceCount"))
    if count == 0:
        raise BackendUnavailable("the CUDA driver reports no devices (check CUDA_VISIBLE_DEVICES and nvidia-smi)")
    return count


def device_properties(index: int = 0) -> DeviceInfo:
    """Name, compute capability, memory and SM count of device ``index``."""
    count = device_count()
    if not 0 <= index < count:
        raise ValueError(f"CUDA device {index} requested; this machine has devices 0..{count - 1}")
    prop = call("cudaGetDeviceProperties", index)
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return DeviceInfo(
        name=name.rstrip("\x00"),
        compute_capability=(int(prop.major), int(prop.minor)),
        total_memory=int(prop.totalGlobalMem),
        sm_count=int(prop.multiProcessorCount),
    )


def stream_handle(stream: Any) -> int:
    """The raw ``cudaStream_t`` of a :class:`Stream`, a torch stream, a cuda-bindings stream or an int."""
    if isinstance(stream, Stream):
        return stream.handle
    if hasattr(stream, "cuda_stream"):  # torch.cuda.Stream / ExternalStream
        return int(stream.cuda_stream)
    if stream is None:
        return 0
    return int(stream)


class Stream:
    """A CUDA stream. ``Stream()`` creates a non-blocking stream that this object destroys;
    :meth:`wrap` borrows someone else's (a torch stream, a raw handle) and never destroys it."""

    def __init__(self, non_blocking: bool = True):
        flags = cudart().cudaStreamNonBlocking if non_blocking else cudart().cudaStreamDefault
        self._handle: int | None = int(call("cudaStreamCreateWithFlags", flags))
        self._owned = True

    @classmethod
    def wrap(cls, stream: Any) -> "Stream":
        """Borrow ``stream`` (``torch.cuda.Stream``, an int handle, ...) without owning it."""
        obj = cls.__new__(cls)
        obj._handle = stream_handle(stream)
        obj._owned = False
        return obj

    @property
    def handle(self) -> int:
        if self._handle is None:
            raise ValueError("this stream was destroyed")
        return self._handle

    def synchronize(self) -> None:
        call("cudaStreamSynchronize", self.handle)

    def destroy(self) -> None:
        """Destroy an owned stream (no-op for a wrapped one). Safe to call twice."""
        if self._owned and self._handle is not None:
            call("cudaStreamDestroy", self._handle)
        self._handle = None

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"Stream(handle={self._handle:#x}, owned={self._owned})" if self._handle is not None else "Stream(destroyed)"


class Event:
    """A CUDA event for ordering and timing: ``start.record(s); ...; end.record(s);
    end.synchronize(); start.elapsed_ms(end)``."""

    def __init__(self, timing: bool = True):
        flags = cudart().cudaEventDefault if timing else cudart().cudaEventDisableTiming
        self._handle: Any = call("cudaEventCreateWithFlags", flags)

    @property
    def handle(self) -> Any:
        if self._handle is None:
            raise ValueError("this event was destroyed")
        return self._handle

    def record(self, stream: Any = None) -> "Event":
        call("cudaEventRecord", self.handle, stream_handle(stream))
        return self

    def synchronize(self) -> None:
        call("cudaEventSynchronize", self.handle)

    def elapsed_ms(self, end: "Event") -> float:
        """Milliseconds from this event to ``end`` (both recorded and complete)."""
        return float(call("cudaEventElapsedTime", self.handle, end.handle))

    def destroy(self) -> None:
        if self._handle is not None:
            call("cudaEventDestroy", self._handle)
        self._handle = None

    def __enter__(self) -> "Event":
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


class DeviceBuffer:
    """Device memory from ``cudaMalloc``, typed by ``shape``/``dtype`` (default: bytes).

    ``__cuda_array_interface__`` lets torch, CuPy or Numba view it without a copy:
    ``torch.as_tensor(buf, device="cuda")``. Such a view keeps the buffer object alive, but
    :meth:`free` releases the memory at once, so free only when no view is in use.
    """

    def __init__(self, shape: int | tuple[int, ...], dtype: Any = np.uint8):
        self.shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.size = _nbytes(self.shape, self.dtype)
        if self.size <= 0:
            raise ValueError(f"DeviceBuffer needs a positive size, got shape {self.shape} of {self.dtype}")
        self._ptr: int | None = int(call("cudaMalloc", self.size))

    @property
    def ptr(self) -> int:
        if self._ptr is None:
            raise ValueError("this device buffer was freed")
        return self._ptr

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3,
                "strides": None}

    def free(self) -> None:
        """Release the memory now. Safe to call twice."""
        if self._ptr is not None:
            call("cudaFree", self._ptr)
        self._ptr = None

    def __del__(self) -> None:
        # At interpreter exit the runtime may already be gone; a failure here must not raise.
        try:
            self.free()
        except Exception:
            pass

    def __enter__(self) -> "DeviceBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()

    def __repr__(self) -> str:
        return f"DeviceBuffer(shape={self.shape}, dtype={self.dtype}, bytes={self.size})"


class PinnedBuffer:
    """Page-locked host memory from ``cudaMallocHost``; :attr:`array` is a numpy view of it.
    Only pinned memory lets ``memcpy_*_async`` overlap with compute."""

    def __init__(self, shape: int | tuple[int, ...], dtype: Any = np.uint8):
        self.shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.size = _nbytes(self.shape, self.dtype)
        if self.size <= 0:
            raise ValueError(f"PinnedBuffer needs a positive size, got shape {self.shape} of {self.dtype}")
        self._ptr: int | None = int(call("cudaMallocHost", self.size))
        raw = (ctypes.c_uint8 * self.size).from_address(self._ptr)
        self.array: np.ndarray = np.frombuffer(memoryview(raw), dtype=self.dtype).reshape(self.shape)

    @property
    def ptr(self) -> int:
        if self._ptr is None:
            raise ValueError("this pinned buffer was freed")
        return self._ptr

    def free(self) -> None:
        """Release the memory now; :attr:`array` must not be used afterwards. Safe to call twice."""
        if self._ptr is not None:
            call("cudaFreeHost", self._ptr)
        self._ptr = None

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass

    def __enter__(self) -> "PinnedBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


def _host_pointer(host: np.ndarray | PinnedBuffer, nbytes: int | None, what: str) -> tuple[int, int]:
    if isinstance(host, PinnedBuffer):
        return host.ptr, host.size
    if not isinstance(host, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array or PinnedBuffer, got {type(host).__name__}")
    if not host.flags.c_contiguous:
        raise ValueError(f"{what}: the host array must be C-contiguous (use np.ascontiguousarray)")
    return int(host.ctypes.data), int(host.nbytes)


def _device_pointer(device: DeviceBuffer | int) -> tuple[int, int | None]:
    if isinstance(device, DeviceBuffer):
        return device.ptr, device.size
    return int(device), None  # a raw pointer: the caller vouches for its size


def _copy_size(what: str, nbytes: int | None, host_size: int, device_size: int | None) -> int:
    count = host_size if nbytes is None else nbytes
    if count > host_size or (device_size is not None and count > device_size):
        raise ValueError(f"{what}: {count} bytes requested, host side holds {host_size}, "
                         f"device side {device_size if device_size is not None else 'unknown'}")
    return count


def memcpy_htod_async(dst: DeviceBuffer | int, src: np.ndarray | PinnedBuffer, stream: Any,
                      nbytes: int | None = None) -> None:
    """Copy ``nbytes`` (default: all of ``src``) host -> device on ``stream``."""
    src_ptr, src_size = _host_pointer(src, nbytes, "memcpy_htod_async source")
    dst_ptr, dst_size = _device_pointer(dst)
    count = _copy_size("memcpy_htod_async", nbytes, src_size, dst_size)
    call("cudaMemcpyAsync", dst_ptr, src_ptr, count, cudart().cudaMemcpyKind.cudaMemcpyHostToDevice,
         stream_handle(stream))


def memcpy_dtoh_async(dst: np.ndarray | PinnedBuffer, src: DeviceBuffer | int, stream: Any,
                      nbytes: int | None = None) -> None:
    """Copy ``nbytes`` (default: all of ``dst``) device -> host on ``stream``; sync before reading."""
    dst_ptr, dst_size = _host_pointer(dst, nbytes, "memcpy_dtoh_async destination")
    src_ptr, src_size = _device_pointer(src)
    count = _copy_size("memcpy_dtoh_async", nbytes, dst_size, src_size)
    call("cudaMemcpyAsync", dst_ptr, src_ptr, count, cudart().cudaMemcpyKind.cudaMemcpyDeviceToHost,
         stream_handle(stream))


class CudaGraph:
    """One captured CUDA graph: ``begin(stream)``, enqueue work, ``end()``, then ``launch(stream)``.

    Capture uses thread-local mode: only this thread's capture-unsafe calls (a cudaMalloc, a
    host sync) invalidate it, so torch work on other threads keeps running meanwhile.
    """

    def __init__(self) -> None:
        self._graph: Any = None
        self._exec: Any = None
        self._capturing: int | None = None

    def begin(self, stream: Any) -> None:
        handle = stream_handle(stream)
        if handle == 0:
            raise ValueError("CUDA graphs cannot be captured on the legacy default stream; use a created stream")
        mode = cudart().cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        call("cudaStreamBeginCapture", handle, mode)
        self._capturing = handle

    def end(self) -> None:
        """End the capture and instantiate the graph; raises CudaError if the capture was invalidated."""
        if self._capturing is None:
            raise ValueError("end() without begin()")
        handle, self._capturing = self._capturing, None
        self._graph = call("cudaStreamEndCapture", handle)
        self._exec = call("cudaGraphInstantiate", self._graph, 0)

    def abort(self) -> None:
        """Leave capture mode after a failed enqueue, dropping whatever was captured."""
        if self._capturing is not None:
            handle, self._capturing = self._capturing, None
            err, graph = cudart().cudaStreamEndCapture(handle)
            if err == cudart().cudaError_t.cudaSuccess and graph is not None and int(graph) != 0:
                cudart().cudaGraphDestroy(graph)

    def launch(self, stream: Any) -> None:
        if self._exec is None:
            raise ValueError("no graph captured yet")
        call("cudaGraphLaunch", self._exec, stream_handle(stream))

    def destroy(self) -> None:
        if self._exec is not None:
            call("cudaGraphExecDestroy", self._exec)
        if self._graph is not None:
            call("cudaGraphDestroy", self._graph)
        self._exec = self._graph = None
