"""The CUDA runtime through cuda-python (``cuda.bindings.runtime``, cuda-bindings >= 12.6): what
the TensorRT backend and its build need besides torch. Device properties (the GPU a plan is built
for) and :class:`CudaGraph`, which captures TensorRT's enqueue on a torch stream.

Not pycuda: ``pycuda.autoinit`` creates its own context, which breaks torch tensors in the same
process (NVIDIA/TensorRT#4335); the runtime API used here works on the primary context that torch
uses too. Not the ``cuda.cudart`` module either: cuda-bindings 13 removed it.

``cuda.bindings`` is imported on first use, so ``import engines.cuda`` works on a machine without
the package, a driver or a GPU; calls there raise :class:`~engines.base.BackendUnavailable`.
Every failing runtime call raises :class:`CudaError` naming the call and CUDA's own message.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType
from typing import Any

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
    """The raw ``cudaStream_t`` of a torch stream, a cuda-bindings stream or an int (None: 0)."""
    if hasattr(stream, "cuda_stream"):  # torch.cuda.Stream / ExternalStream
        return int(stream.cuda_stream)
    if stream is None:
        return 0
    return int(stream)


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
