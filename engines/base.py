"""The one engine interface every backend implements.

An :class:`Engine` runs one graph of :mod:`engines.contracts`. Its public methods validate names,
dtypes and shapes once and then call the backend's ``_infer`` (the Polygraphy ``infer`` /
``infer_impl`` split). Device-resident tensors are torch tensors: any DLPack or
``__cuda_array_interface__`` array (CuPy, Numba, JAX) is wrapped without a copy by
:func:`as_torch`. The lifecycle is a context manager: ``with engine: engine.infer(...)``.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from engines.contracts import GraphContract, TensorSpec

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64, "int32": torch.int32}


class EngineError(RuntimeError):
    """A backend failed to load or run a graph; the message says which graph and why."""


class BackendUnavailable(EngineError):
    """The backend's library, device or provider is missing on this machine."""


def as_torch(array: Any) -> torch.Tensor:
    """A torch view of ``array`` without a copy: torch tensors as they are, DLPack or
    ``__cuda_array_interface__`` objects (CuPy, Numba) through DLPack, numpy arrays on the host."""
    if isinstance(array, torch.Tensor):
        return array
    if isinstance(array, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(array))
    if hasattr(array, "__dlpack__"):
        return torch.from_dlpack(array)
    if hasattr(array, "__cuda_array_interface__"):
        # Numba-style arrays without DLPack: torch reads the interface directly.
        return torch.as_tensor(array, device="cuda")
    raise TypeError(f"expected a torch tensor, numpy array or DLPack array, got {type(array).__name__}")


def check_feeds(contract: GraphContract, feeds: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Validate ``feeds`` against the contract; return the bound symbolic dimensions.

    Errors name the graph, the tensor, what was received and what was expected.
    """
    expected = set(contract.input_names)
    got = set(feeds)
    if got != expected:
        missing = sorted(expected - got)
        unexpected = sorted(got - expected)
        raise KeyError(
            f"graph {contract.name!r} expects inputs {list(contract.input_names)}; "
            f"missing {missing}, unexpected {unexpected}"
        )
    dims: dict[str, int] = dict(contract.fixed_dims)
    for spec in contract.inputs:
        _check_one(contract, spec, feeds[spec.name], dims)
    return dims


def _check_one(contract: GraphContract, spec: TensorSpec, tensor: torch.Tensor, dims: dict[str, int]) -> None:
    where = f"graph {contract.name!r} input {spec.name!r}"
    want = TORCH_DTYPES[spec.dtype]
    if tensor.dtype != want:
        raise TypeError(f"{where}: dtype {tensor.dtype} received, {want} expected")
    if tensor.dim() != len(spec.shape):
        raise ValueError(f"{where}: rank {tensor.dim()} (shape {tuple(tensor.shape)}) received, "
                         f"rank {len(spec.shape)} {spec.shape} expected")
    for axis, (size, dim) in enumerate(zip(tensor.shape, spec.shape)):
        if isinstance(dim, int):
            if size != dim:
                raise ValueError(f"{where}: axis {axis} is {size}, expected {dim} (shape {tuple(tensor.shape)})")
            continue
        if dim in dims and dims[dim] != size:
            raise ValueError(f"{where}: axis {axis} ({dim}) is {size}, but another input set {dim}={dims[dim]}")
        if dim in ("height", "width") and size % 8:
            raise ValueError(f"{where}: {dim} {size} is not a multiple of 8; pad the image first")
        if size < 1:
            raise ValueError(f"{where}: {dim} is {size}; empty tensors cannot be run")
        dims[dim] = int(size)


def parse_device(device: str | int | torch.device, *, must_exist: bool = True) -> torch.device:
    """The one reading of a device argument: ``N`` or ``"N"`` (CUDA index), ``"cuda"``, ``"cuda:N"``,
    ``"cpu"`` or a ``torch.device`` -> a torch.device with an explicit CUDA index (engines compare
    devices, and ``cuda`` != ``cuda:0`` for torch; ``"cuda"`` means the current CUDA device, 0 where
    there is none). Anything else raises ValueError naming the value.

    ``must_exist``: a CUDA device must be visible (BackendUnavailable says why not). Pass False to
    only parse, where a missing device is reported rather than raised (backend availability).
    """
    expected = "expected a CUDA index, 'cuda', 'cuda:N', 'cpu' or a torch.device"
    if isinstance(device, bool) or (isinstance(device, int) and device < 0):
        raise ValueError(f"device {device!r}: {expected}")
    if isinstance(device, int):
        parsed = torch.device("cuda", device)
    elif isinstance(device, str):
        text = device.strip().lower()
        try:
            parsed = torch.device("cuda", int(text)) if text.isdigit() else torch.device(text)
        except RuntimeError as exc:
            raise ValueError(f"device {device!r}: {expected}") from exc
    elif isinstance(device, torch.device):
        parsed = device
    else:
        raise ValueError(f"device {device!r} ({type(device).__name__}): {expected}")
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: only 'cpu' and CUDA devices are supported")
    if parsed.type == "cpu":
        return torch.device("cpu")
    if must_exist and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {device} requested, but torch {torch.__version__} sees no CUDA GPU; "
                                 "use device='cpu' or install a CUDA build of torch")
    index = parsed.index
    if index is None:
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
    if must_exist and index >= torch.cuda.device_count():
        raise BackendUnavailable(f"device cuda:{index} requested, but only {torch.cuda.device_count()} "
                                 "CUDA device(s) are visible")
    return torch.device("cuda", index)


def caller_stream(stream: Any, device: torch.device) -> torch.cuda.Stream | None:
    """The torch stream a call runs on: ``None`` -> the current stream of ``device``; a
    ``torch.cuda.Stream`` as it is; a raw ``cudaStream_t`` (int, or an object with ``.handle``)
    wrapped in ``torch.cuda.ExternalStream``. CPU engines take no stream (None in, None out)."""
    if device.type != "cuda":
        if stream is not None:
            raise ValueError(f"a CUDA stream ({stream!r}) was given to an engine on {device}; pass stream=None")
        return None
    if stream is None:
        return torch.cuda.current_stream(device)
    if isinstance(stream, torch.cuda.Stream):
        if stream.device != device:
            raise ValueError(f"stream {stream} belongs to {stream.device}, the engine runs on {device}")
        return stream
    handle = getattr(stream, "handle", stream)
    if isinstance(handle, bool) or not isinstance(handle, int):
        raise TypeError(f"stream must be a torch.cuda.Stream, a raw CUDA stream handle (int) or None; "
                        f"got {type(stream).__name__}")
    return torch.cuda.ExternalStream(handle, device=device)


class Engine(abc.ABC):
    """Runs one graph. Subclasses implement ``_infer`` and, if they hold resources, ``close``."""

    backend: str = "?"

    def __init__(self, contract: GraphContract):
        self.contract = contract

    @property
    def device(self) -> torch.device:
        """Where ``infer`` expects its inputs and returns its outputs."""
        return torch.device("cpu")

    def infer(self, feeds: Mapping[str, Any], stream: Any = None) -> dict[str, torch.Tensor]:
        """Run the graph on device-resident inputs; returns outputs on :attr:`device`.

        ``stream`` is a ``torch.cuda.Stream`` or a raw CUDA stream handle (int); ``None`` means
        the current torch stream. Outputs are ready to use on that stream (ordered after it),
        not synchronised to the host.
        """
        tensors = {name: as_torch(value) for name, value in feeds.items()}
        for name, t in tensors.items():
            if t.device != self.device:
                raise ValueError(
                    f"graph {self.contract.name!r} input {name!r} is on {t.device}, engine runs on {self.device}; "
                    "use infer_host() for host arrays"
                )
        dims = check_feeds(self.contract, tensors)
        return self._infer(tensors, dims, stream)

    def infer_host(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Convenience path: host numpy arrays in and out (copies both ways, synchronises)."""
        on_device = {name: as_torch(np.asarray(a)).to(self.device) for name, a in feeds.items()}
        out = self.infer(on_device)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return {name: t.detach().cpu().numpy() for name, t in out.items()}

    @abc.abstractmethod
    def _infer(self, feeds: dict[str, torch.Tensor], dims: dict[str, int], stream: Any) -> dict[str, torch.Tensor]:
        """Run on validated inputs; ``dims`` binds every symbolic dimension."""

    def close(self) -> None:
        """Release device memory and library handles. Safe to call twice."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(graph={self.contract.name!r}, backend={self.backend!r}, device={self.device})"
