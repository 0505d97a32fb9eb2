"""TensorRT backend: runs one graph from a ``NAME.plan`` built by ``export/build_engines.py``.

Written against the documented TensorRT 10.x and 11.x Python API and TensorRT-RTX 1.x (module
``tensorrt_rtx``): name-based I/O, ``execute_async_v3``, strongly typed plans, features detected
with ``hasattr``. Lifecycle:

1. check the GPU against the flavour (TensorRT-RTX refuses Hopper) and the plan against its
   manifest (:func:`engines.plan.check_plan`), *before* TensorRT sees the bytes;
2. deserialize, then verify the engine's I/O names, modes and dtypes against the contract;
3. per input shape (kept in a small LRU cache, so the 8-step denoising loop allocates nothing):
   pick the optimization profile that covers it, set the shapes, allocate input and output
   buffers as torch CUDA tensors, bind their addresses;
4. per call: copy the feeds into the input buffers, ``execute_async_v3`` (or replay the CUDA graph
   captured for that shape) on the engine's own stream, ordered after and before the caller's.

Outputs are the engine's own buffers for that shape: valid until the next call with the same
input shape, which overwrites them (``.clone()`` what you keep longer). Not thread-safe: one
engine per thread, or a lock around it.
"""
from __future__ import annotations

import importlib
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Mapping

import torch

from engines.artifacts import contract_from_dict
from engines.base import TORCH_DTYPES, BackendUnavailable, Engine, EngineError, caller_stream, check_feeds
from engines.contracts import GraphContract
from engines.cuda import CudaError, CudaGraph, device_properties
from engines.plan import FLAVOURS, PlanRequirements, read_verified_plan, supports_compute_capability

if TYPE_CHECKING:  # the 10.x stubs (tools/mypy-trt) type the objects; at run time the module is imported lazily
    import tensorrt as trt_types

# Module names per flavour, most specific first: the meta package, then the bindings-only wheel.
_MODULES = {"tensorrt": ("tensorrt", "tensorrt_bindings"), "tensorrt_rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings")}

# TensorRT DataType member name -> numpy dtype name (the contracts' vocabulary).
TRT_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT64": "int64", "INT32": "int32",
                   "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}

Shape = tuple[int, ...]
ShapeKey = tuple[Shape, ...]  # one shape per contract input, in contract order


def import_tensorrt(flavour: str = "auto") -> tuple[ModuleType, str]:
    """The TensorRT module and its flavour (``"tensorrt"`` or ``"tensorrt_rtx"``).

    ``"auto"`` prefers TensorRT, then TensorRT-RTX. Raises BackendUnavailable naming what was
    tried when nothing imports (a missing wheel, or a wheel without its libraries).
    """
    if flavour not in ("auto", *FLAVOURS):
        raise ValueError(f"unknown TensorRT flavour {flavour!r}; expected 'auto', 'tensorrt' or 'tensorrt_rtx'")
    order = FLAVOURS if flavour == "auto" else (flavour,)
    failures = []
    for name in order:
        for module_name in _MODULES[name]:
            try:
                return importlib.import_module(module_name), name
            except (ImportError, OSError) as exc:  # OSError: the wheel is there but libnvinfer is not
                failures.append(f"{module_name}: {exc}")
    raise BackendUnavailable(
        "TensorRT is not importable (" + "; ".join(failures) + "). Install it with "
        "pip install tensorrt-cu12 (or tensorrt-cu13 / tensorrt_rtx), or use the onnxruntime backend"
    )


def trt_version(trt: ModuleType) -> str:
    return str(getattr(trt, "__version__", "unknown"))


def dtype_name(trt_dtype: Any) -> str:
    """``trt.DataType.HALF`` -> ``"float16"``; unknown types keep TensorRT's own name."""
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    return TRT_DTYPE_NAMES.get(name, name.lower())


def _mode_name(mode: Any) -> str:
    return str(getattr(mode, "name", mode)).lower()


def _dims(dims: Any) -> Shape:
    return tuple(int(d) for d in dims)


def _fmt_range(lo: Shape, hi: Shape) -> str:
    return "(" + ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in zip(lo, hi)) + ")"


ProfileRanges = dict[str, tuple[Shape, Shape, Shape]]  # input -> (min, opt, max) of one profile


def select_profile(profiles: list[ProfileRanges], shapes: Mapping[str, Shape], where: str = "engine") -> int:
    """Index of the tightest profile (smallest max volume) whose ranges cover every input shape.

    Raises ValueError naming the shapes received and each profile's allowed ranges otherwise.
    """
    covering = []
    for index, ranges in enumerate(profiles):
        if all(len(shapes[n]) == len(r[0]) and all(lo <= v <= hi for lo, v, hi in zip(r[0], shapes[n], r[2]))
               for n, r in ranges.items()):
            covering.append((sum(math.prod(r[2]) for r in ranges.values()), index))
    if covering:
        return min(covering)[1]
    dynamic = list(profiles[0]) if profiles else list(shapes)
    received = ", ".join(f"{n} {tuple(shapes[n])}" for n in dynamic)
    allowed = "; ".join(f"profile {i}: " + ", ".join(f"{n} {_fmt_range(r[0], r[2])}" for n, r in ranges.items())
                        for i, ranges in enumerate(profiles))
    raise ValueError(
        f"{where}: input shape {received} is outside every optimization profile ({allowed}). Rebuild the "
        "plan with a profile that covers it (python export/build_engines.py --profile BxHxW:BxHxW:BxHxW), "
        "or resize or tile the input."
    )


@dataclass
class _ShapeState:
    """Buffers (and maybe a CUDA graph) for one set of input shapes."""

    key: ShapeKey
    profile: int
    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    graph: CudaGraph | None = None
    graph_error: str | None = None
    addresses: dict[str, int] = field(default_factory=dict)


class TensorRTEngine(Engine):
    """One graph on TensorRT or TensorRT-RTX.

    ``TensorRTEngine(plan_path, contract=None, device=0, flavour="auto", precision=None,
    cuda_graphs=False)``: ``contract`` defaults to the one in the plan's manifest; ``precision``
    (``"fp16"``) is checked against the manifest when given; ``cuda_graphs=True`` captures a
    CUDA graph the first time a shape runs and replays it afterwards (see :meth:`capture_graph`).
    """

    backend = "tensorrt"

    def __init__(self, plan_path: str | Path, contract: GraphContract | None = None, *, device: int = 0,
                 flavour: str = "auto", precision: str | None = None, cuda_graphs: bool = False,
                 max_cached_shapes: int = 8):
        self.plan_path = Path(plan_path)
        self.cuda_graphs = cuda_graphs
        self.max_cached_shapes = max(1, max_cached_shapes)
        self._states: OrderedDict[ShapeKey, _ShapeState] = OrderedDict()
        self._active: ShapeKey | None = None
        self._closed = False

        self.trt, self.flavour = import_tensorrt(flavour)
        self.backend = self.flavour
        gpu = device_properties(device)
        if not supports_compute_capability(self.flavour, gpu.compute_capability):
            major, minor = gpu.compute_capability
            raise EngineError(
                f"{self.flavour} {trt_version(self.trt)} cannot run on {gpu.name}: compute capability "
                f"{major}.{minor} is not supported (TensorRT-RTX runs on 7.5, 8.0, 8.6, 8.9 and 12.x). "
                "Use TensorRT (flavour='tensorrt') or the onnxruntime backend on this GPU."
            )
        expected = PlanRequirements(
            graph=contract.name if contract is not None else None, flavour=self.flavour,
            trt_version=trt_version(self.trt), gpu_name=gpu.name, compute_capability=gpu.compute_capability,
            precision=precision,
        )
        self.manifest, plan = read_verified_plan(self.plan_path, expected)
        super().__init__(contract if contract is not None else contract_from_dict(self.manifest.contract))
        self._device = torch.device("cuda", device)

        with torch.cuda.device(self._device):
            self._logger = self.trt.Logger(self.trt.Logger.WARNING)
            self._runtime = self.trt.Runtime(self._logger)
            if self.manifest.dla_core is not None:  # a DLA plan runs on the core the runtime names
                self._runtime.DLA_core = self.manifest.dla_core
            engine: trt_types.ICudaEngine | None = self._runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise EngineError(
                    f"{self.flavour} {trt_version(self.trt)} could not deserialize {self.plan_path} although its "
                    f"manifest matches (built by {self.manifest.flavour} {self.manifest.trt_version} on "
                    f"{self.manifest.gpu_name}); TensorRT's messages above say why. Rebuild the plan."
                )
            self._engine: trt_types.ICudaEngine = engine
            self._verify_io()
            self._profiles = self._read_profiles()
            context: trt_types.IExecutionContext | None = engine.create_execution_context()
            if context is None:
                raise EngineError(f"could not create an execution context for {self.plan_path} "
                                  f"(activation memory {self.activation_bytes / 2**20:.0f} MiB; out of GPU memory?)")
            self._context: trt_types.IExecutionContext = context
            # A stream of our own: TensorRT synchronises extra on the legacy default stream, and graphs
            # cannot be captured there. Calls are ordered after and before the caller's stream.
            self._stream = torch.cuda.Stream(self._device)

    # ----------------------------------------------------------------------------- load-time checks

    def _verify_io(self) -> None:
        """Names, modes, dtypes and ranks of the engine's I/O against the contract."""
        engine, trt, contract = self._engine, self.trt, self.contract
        io = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        expected = set(contract.input_names) | set(contract.output_names)
        if io != expected:
            raise EngineError(
                f"plan {self.plan_path} has I/O tensors {sorted(io)}, graph {contract.name!r} expects "
                f"{sorted(expected)} (missing {sorted(expected - io)}, unexpected {sorted(io - expected)}). "
                "The plan was built from another graph: rebuild it from this export."
            )
        problems = []
        for spec in contract.inputs + contract.outputs:
            want_mode = trt.TensorIOMode.INPUT if spec.name in contract.input_names else trt.TensorIOMode.OUTPUT
            mode = engine.get_tensor_mode(spec.name)
            if mode != want_mode:
                problems.append(f"{spec.name!r} is an {_mode_name(mode)} in the plan, {_mode_name(want_mode)} expected")
            dtype = dtype_name(engine.get_tensor_dtype(spec.name))
            if dtype != spec.dtype:
                problems.append(f"{spec.name!r} is {dtype} in the plan, {spec.dtype} expected")
            shape = _dims(engine.get_tensor_shape(spec.name))
            if len(shape) != len(spec.shape):
                problems.append(f"{spec.name!r} has shape {shape} in the plan, {spec.shape} expected")
                continue
            for have, want in zip(shape, spec.shape):
                if isinstance(want, int) and have >= 0 and have != want:
                    problems.append(f"{spec.name!r} has shape {shape} in the plan, {spec.shape} expected")
                    break
        if problems:
            raise EngineError(f"plan {self.plan_path} does not match graph {contract.name!r}: " + "; ".join(problems))

    def _read_profiles(self) -> list[ProfileRanges]:
        """Per optimization profile, the (min, opt, max) shape of every dynamic input."""
        profiles = []
        for index in range(self._engine.num_optimization_profiles):
            ranges: ProfileRanges = {}
            for name in self.contract.input_names:
                if -1 in _dims(self._engine.get_tensor_shape(name)):
                    lo, opt, hi = (_dims(d) for d in self._engine.get_tensor_profile_shape(name, index))
                    ranges[name] = (lo, opt, hi)
            profiles.append(ranges)
        return profiles

    @property
    def profiles(self) -> list[ProfileRanges]:
        """``[{input: (min, opt, max)}]``, one dict per optimization profile of the plan."""
        return list(self._profiles)

    @property
    def activation_bytes(self) -> int:
        """Device memory the execution context needs beside the I/O buffers."""
        if hasattr(self._engine, "device_memory_size_v2"):  # 10.x and 11.x; 11.x removed device_memory_size
            return int(self._engine.device_memory_size_v2)
        return int(self._engine.device_memory_size)

    @property
    def device(self) -> torch.device:
        return self._device

    # ----------------------------------------------------------------------------- per-shape state

    def _state_for(self, key: ShapeKey, dims: dict[str, int]) -> _ShapeState:
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
            return state
        # Raises before TensorRT sees a shape no profile allows.
        profile = select_profile(self._profiles, dict(zip(self.contract.input_names, key)),
                                 where=f"graph {self.contract.name!r} ({self.plan_path})")
        if len(self._states) >= self.max_cached_shapes:
            # Rare (many distinct shapes): wait until no stream can still touch the evicted buffers.
            torch.cuda.synchronize(self._device)
            _, evicted = self._states.popitem(last=False)
            self._release(evicted)
        state = _ShapeState(key=key, profile=profile, inputs={}, outputs={})
        self._set_shapes(state)
        # Allocated on the engine's stream, which is where they are written.
        with torch.cuda.stream(self._stream):
            for spec, shape in zip(self.contract.inputs, key):
                state.inputs[spec.name] = torch.empty(shape, dtype=TORCH_DTYPES[spec.dtype], device=self._device)
            for spec in self.contract.outputs:
                shape = _dims(self._context.get_tensor_shape(spec.name))
                expected = spec.concrete(dims)
                if shape != expected:
                    raise EngineError(f"graph {self.contract.name!r}: the plan gives output {spec.name!r} shape "
                                      f"{shape} for inputs {key}, the contract says {expected}")
                state.outputs[spec.name] = torch.empty(shape, dtype=TORCH_DTYPES[spec.dtype], device=self._device)
        state.addresses = {name: t.data_ptr() for name, t in (*state.inputs.items(), *state.outputs.items())}
        self._bind_addresses(state)
        self._states[key] = state
        return state

    def _set_shapes(self, state: _ShapeState) -> None:
        ctx = self._context
        if ctx.active_optimization_profile != state.profile:
            if not ctx.set_optimization_profile_async(state.profile, self._stream.cuda_stream):
                raise EngineError(f"graph {self.contract.name!r}: TensorRT refused optimization profile {state.profile}")
        for name, shape in zip(self.contract.input_names, state.key):
            if not ctx.set_input_shape(name, shape):
                raise EngineError(f"graph {self.contract.name!r}: TensorRT refused input {name!r} shape {shape} "
                                  f"in profile {state.profile} ({self._profiles[state.profile].get(name)})")
        unresolved = ctx.infer_shapes()
        if unresolved:
            raise EngineError(f"graph {self.contract.name!r}: TensorRT cannot infer the shapes of {unresolved}")
        self._active = None  # addresses still point at the previous state's buffers

    def _bind_addresses(self, state: _ShapeState) -> None:
        for name, address in state.addresses.items():
            if not self._context.set_tensor_address(name, address):
                raise EngineError(f"graph {self.contract.name!r}: TensorRT refused the address of {name!r}")
        self._active = state.key

    def _activate(self, state: _ShapeState) -> None:
        # The context holds one set of shapes and addresses; restore this state's before running it
        # (also before a graph replay, in case the captured work reads the context's host-side state).
        if self._active != state.key:
            self._set_shapes(state)
            self._bind_addresses(state)

    def _release(self, state: _ShapeState) -> None:
        if state.graph is not None:
            state.graph.destroy()
        state.inputs.clear()
        state.outputs.clear()
        if self._active == state.key:
            self._active = None

    # ----------------------------------------------------------------------------- running

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise EngineError(f"graph {self.contract.name!r}: TensorRT's execute_async_v3 failed; "
                              "its log above says why")

    def _capture(self, state: _ShapeState) -> bool:
        """Capture this state's enqueue as a CUDA graph, trtexec-style: after one plain enqueue.
        Falls back (returns False, ``state.graph_error`` set) when the engine is not capturable."""
        handle = self._stream.cuda_stream
        capturable = getattr(self._context, "is_stream_capturable", None)  # TensorRT-RTX 1.2+
        if capturable is not None and not capturable(handle):
            state.graph_error = "TensorRT reports the execution context is not stream-capturable"
            return False
        graph = CudaGraph()
        try:
            graph.begin(handle)
            ok = self._context.execute_async_v3(handle)
        except (CudaError, RuntimeError) as exc:
            graph.abort()
            state.graph_error = f"capture failed: {exc}"
            return False
        if not ok:
            graph.abort()
            state.graph_error = "execute_async_v3 failed under stream capture (an uncapturable layer?)"
            return False
        try:
            graph.end()
        except CudaError as exc:
            graph.destroy()
            state.graph_error = f"capture was invalidated: {exc}"
            return False
        state.graph = graph
        return True

    def _run(self, state: _ShapeState, feeds: Mapping[str, torch.Tensor], caller: torch.cuda.Stream,
             capture: bool) -> None:
        self._stream.wait_stream(caller)
        with torch.cuda.stream(self._stream):
            for name, buffer in state.inputs.items():
                buffer.copy_(feeds[name], non_blocking=True)
                feeds[name].record_stream(self._stream)  # the caller may free it before we are done
            self._activate(state)
            if state.graph is not None:
                state.graph.launch(self._stream.cuda_stream)
            else:
                self._enqueue()
                if capture and state.graph_error is None and not self._capture(state):
                    warnings.warn(f"graph {self.contract.name!r} shapes {state.key}: no CUDA graph, plain enqueue "
                                  f"instead ({state.graph_error})", RuntimeWarning, stacklevel=3)
        caller.wait_stream(self._stream)

    def _infer(self, feeds: dict[str, torch.Tensor], dims: dict[str, int], stream: Any) -> dict[str, torch.Tensor]:
        if self._closed:
            raise EngineError(f"{self!r} is closed")
        key = tuple(tuple(int(d) for d in feeds[name].shape) for name in self.contract.input_names)
        with torch.cuda.device(self._device):
            caller = caller_stream(stream, self._device)
            assert caller is not None  # a TensorRT engine always runs on a CUDA device
            state = self._state_for(key, dims)
            self._run(state, feeds, caller, capture=self.cuda_graphs)
        return dict(state.outputs)

    def capture_graph(self, feeds: Mapping[str, Any], stream: Any = None) -> bool:
        """Run ``feeds`` once, then capture that shape's enqueue as a CUDA graph that later calls
        with the same shapes replay. Returns False (and warns why) when the engine cannot be
        captured; those calls then enqueue as usual. The outputs of this run are in the buffers."""
        tensors = {name: torch.as_tensor(value, device=self._device) for name, value in feeds.items()}
        dims = check_feeds(self.contract, tensors)
        key = tuple(tuple(int(d) for d in tensors[name].shape) for name in self.contract.input_names)
        with torch.cuda.device(self._device):
            caller = caller_stream(stream, self._device)
            assert caller is not None  # a TensorRT engine always runs on a CUDA device
            state = self._state_for(key, dims)
            if state.graph is None:
                state.graph_error = None  # an explicit request retries a capture that failed before
            self._run(state, tensors, caller, capture=True)
        return state.graph is not None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if hasattr(self, "_stream"):
            self._stream.synchronize()
        for state in self._states.values():
            self._release(state)
        self._states.clear()
        # Release in dependency order: context, engine, then the runtime that made them.
        for attr in ("_context", "_engine", "_runtime"):
            if hasattr(self, attr):
                delattr(self, attr)
