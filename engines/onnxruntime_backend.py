"""ONNX Runtime backend: one exported graph (``NAME.onnx``) on the CUDA, TensorRT or CPU provider.

Lifecycle of an :class:`OnnxRuntimeEngine`:

1. pick the execution providers for the request (``"cuda"``: CUDAExecutionProvider;
   ``"tensorrt"``: TensorrtExecutionProvider, with CUDA under it for the nodes TensorRT does not
   take; ``"cpu"``; ``"auto"``: CUDA on a GPU, else CPU) and check them against
   ``onnxruntime.get_available_providers()``;
2. create the session and read back ``session.get_providers()``: a provider that is missing or that
   ONNX Runtime dropped is a *fallback*, announced with ``logging.warning`` and kept in
   :attr:`OnnxRuntimeEngine.fallback` (from what, to what, why); ``strict=True`` raises
   :class:`~engines.base.BackendUnavailable` instead. ONNX Runtime itself falls back silently
   (microsoft/onnxruntime#23372), hence this check;
3. check the graph's input and output names, element types and ranks against the contract;
4. per call: bind the inputs' memory and freshly allocated outputs (shapes from the contract's
   dimensions) through IOBinding, so tensors never leave the device, and run.

CUDA streams. The CUDA and TensorRT providers run on a stream of their own. We create one torch
stream per engine and hand it to the provider as ``user_compute_stream`` (a provider option of
both since ONNX Runtime 1.17, microsoft/onnxruntime#19229; the default stream 0 is not accepted as
a user stream, microsoft/onnxruntime PR by kailums, 2024). Each call makes that stream wait for
the caller's stream (a device-side wait: inputs the caller is still computing are ready when ONNX
Runtime reads them), runs, and makes the caller's stream wait for the engine's. ``run`` also
synchronises the provider's stream before it returns (ONNX Runtime's default), so outputs are
complete when :meth:`infer` returns. (The run option ``disable_synchronize_execution_providers``
would spare that wait, but with ONNX Runtime 1.31.1 on an H100 it aborted the process with CUDA
error 800 in ``cudaFreeHost``: not used.) If the installed version does not echo the stream option
back, we cannot prove which stream it uses, and fall back to synchronising the caller's stream on
the host before every run.

CUDA graphs. ONNX Runtime's work cannot be captured in a torch CUDA graph, but its CUDA provider
captures and replays graphs of its own (provider option ``enable_cuda_graph``: every node on the
CUDA provider, fixed shapes, inputs and outputs bound at fixed addresses). ``cuda_graphs=True``
(what :func:`onnxruntime_engines` asks for the denoising step, whose shapes do not depend on the
image) keeps static input and output buffers per shape (one graph each, ``gpu_graph_id``, up to
:data:`MAX_GRAPHS`), copies the feeds in and the outputs out on the caller's stream, and replays:
the step's ~100 small kernels cost one launch. A session that cannot use graphs (a node on the
CPU provider) is opened again without, announced with ``logging.warning`` and kept in
:attr:`OnnxRuntimeEngine.cuda_graph_error`.

``onnxruntime-gpu`` wheels that rely on the CUDA libraries of pip packages need
``onnxruntime.preload_dlls()`` (ONNX Runtime >= 1.21) after torch is imported; it is called once
when a CUDA provider is requested.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from engines.artifacts import ExportManifest
from engines.base import TORCH_DTYPES, BackendUnavailable, Engine, EngineError, caller_stream, parse_device
from engines.contracts import DENOISE_STEP, GraphContract, Precision, graph_contracts

log = logging.getLogger("engines")

PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider", "cpu": "CPUExecutionProvider"}
# ONNX Runtime's tensor type strings -> the contracts' numpy dtype names.
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}
# Shapes with a CUDA graph of their own per engine (each pins its buffers); other shapes run plainly.
MAX_GRAPHS = 4

_dlls_preloaded = False


@dataclass
class _GraphSlot:
    """The fixed buffers and binding of one captured shape."""

    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    binding: Any
    run_options: Any


@dataclass(frozen=True)
class Fallback:
    """A provider that was asked for and is not the one running the graph."""

    requested: str
    used: str
    reason: str

    def __str__(self) -> str:
        return f"{self.requested} -> {self.used}: {self.reason}"


def import_onnxruntime(cuda: bool = False) -> ModuleType:
    """``onnxruntime``, or BackendUnavailable saying what to install. With ``cuda``, the CUDA
    libraries of pip's nvidia packages are preloaded once (a no-op where they are not needed)."""
    global _dlls_preloaded
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(
            "onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA, TensorRT)"
        ) from exc
    if cuda and not _dlls_preloaded and hasattr(ort, "preload_dlls"):
        # torch is imported first (above, at module level), so its CUDA libraries win where both exist.
        try:
            ort.preload_dlls()
        except (OSError, RuntimeError) as exc:
            log.warning("onnxruntime.preload_dlls() failed (%s); the CUDA provider may not load", exc)
        _dlls_preloaded = True
    return ort


def ort_errors(ort: ModuleType) -> tuple[type[BaseException], ...]:
    """The exception classes ONNX Runtime raises (they derive from Exception, not RuntimeError)."""
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    found = [v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception)] if state else []
    return (RuntimeError, *found)


class OnnxRuntimeEngine(Engine):
    """One ONNX graph in an ONNX Runtime session.

    ``OnnxRuntimeEngine(onnx_path, contract, device="cpu", provider="auto", strict=False,
    precision="fp32", cache_dir=None, provider_options=None, session_options=None, cuda_graphs=False)``

    - ``provider``: "auto" (CUDA on a GPU device, CPU on the CPU), "cuda", "tensorrt" or "cpu".
    - ``precision``: the graph's own precision (from the export manifest); with the TensorRT
      provider, fp16 turns on ``trt_fp16_enable`` (an fp32 graph stays fp32).
    - ``cache_dir``: where the TensorRT provider keeps its engines and timing cache (default:
      ``ort_trt_cache`` beside the ONNX file). Engines are rebuilt when shapes leave the cached
      range, which takes minutes.
    - ``provider_options`` / ``session_options``: extra ONNX Runtime settings, merged over ours
      (``{option: value}`` for the primary provider; attributes of ``SessionOptions``).
    - ``cuda_graphs``: replay this graph as CUDA graphs of the CUDA provider (module docstring).

    :attr:`providers` lists the providers the session really has; :attr:`fallback` is None or a
    :class:`Fallback`.
    """

    backend = "onnxruntime"

    def __init__(self, onnx_path: str | Path, contract: GraphContract, device: str | int | torch.device = "cpu",
                 provider: str = "auto", strict: bool = False, precision: Precision | str = Precision.FP32,
                 cache_dir: str | Path | None = None, provider_options: dict[str, Any] | None = None,
                 session_options: dict[str, Any] | None = None, cuda_graphs: bool = False):
        super().__init__(contract)
        self.onnx_path = Path(onnx_path)
        self.precision = Precision.parse(precision)
        self._device = parse_device(device)
        self._session: Any = None
        self._stream: torch.cuda.Stream | None = None
        self.fallback: Fallback | None = None
        if not self.onnx_path.is_file():
            raise FileNotFoundError(f"graph {contract.name!r}: {self.onnx_path} does not exist; export the ONNX "
                                    "graphs first (export/onnx_export.py) or point to the folder that holds them")
        provider = self._check_provider(provider)
        self.requested_provider = provider
        self._ort = import_onnxruntime(cuda=provider != "cpu")
        self._errors = ort_errors(self._ort)

        # 1. the providers to ask for, after what this installation has
        wanted = self._available_chain(provider, strict)
        if self._device.type == "cuda" and wanted != "cpu":
            # A stream of our own for the provider; torch.cuda.Stream is never the default stream 0.
            self._stream = torch.cuda.Stream(self._device)
        # 2. the session (with the CUDA provider's graphs where asked for), and what it really runs on
        self.cuda_graph_error: str | None = None if cuda_graphs else "not asked for (cuda_graphs=False)"
        if cuda_graphs and wanted != "cuda":
            self.cuda_graph_error = f"CUDA graphs are an option of the CUDA provider, not of {PROVIDERS[wanted]}"
        self._session = self._open_session(wanted, cache_dir, provider_options or {}, session_options or {})
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        self._check_used(wanted, strict)
        self._on_gpu = self._device.type == "cuda" and self.providers[0] != PROVIDERS["cpu"]
        self._sync_caller_on_host = self._on_gpu and not self._stream_accepted()
        if self.uses_cuda_graph and not self._on_gpu:
            self.cuda_graph_error = f"the session runs on {self.providers[0]}"
        self._graphs: dict[tuple[tuple[int, ...], ...], _GraphSlot] = {}
        # A session with graphs captures graph 0 unless a run says otherwise: shapes past
        # MAX_GRAPHS run plainly with gpu_graph_id -1.
        self._plain_run_options = self._run_options(-1) if self.uses_cuda_graph else None
        # 3. the graph against the contract
        self._check_io()

    # ----------------------------------------------------------------------------- providers

    def _check_provider(self, provider: str) -> str:
        provider = provider.lower()
        if provider == "auto":
            return "cuda" if self._device.type == "cuda" else "cpu"
        if provider not in PROVIDERS:
            raise ValueError(f"provider {provider!r}: expected 'auto', 'cuda', 'tensorrt' or 'cpu'")
        if provider == "cpu" and self._device.type == "cuda":
            raise ValueError(f"provider 'cpu' runs on the host, but device {self._device} was asked for; "
                             "pass device='cpu' (or provider='cuda')")
        if provider != "cpu" and self._device.type != "cuda":
            raise ValueError(f"provider {provider!r} needs a CUDA device, got device={str(self._device)!r}; "
                             "pass device='cuda:0' or provider='cpu'")
        return provider

    def _announce(self, fallback: Fallback, strict: bool) -> None:
        where = f"graph {self.contract.name!r} ({self.onnx_path.name})"
        if strict:
            raise BackendUnavailable(f"{where}: ONNX Runtime cannot run {fallback.requested} "
                                     f"({fallback.reason}); strict=True refuses to fall back to {fallback.used}")
        log.warning("onnxruntime: %s falls back from %s", where, fallback)
        self.fallback = fallback

    def _available_chain(self, provider: str, strict: bool) -> str:
        """The provider to ask for, after ``get_available_providers()``: TensorRT -> CUDA -> CPU."""
        available = self._ort.get_available_providers()
        chain = {"tensorrt": ["tensorrt", "cuda", "cpu"], "cuda": ["cuda", "cpu"], "cpu": ["cpu"]}[provider]
        for candidate in chain:
            if PROVIDERS[candidate] in available:
                if candidate != provider:
                    self._announce(Fallback(PROVIDERS[provider], PROVIDERS[candidate],
                                            f"onnxruntime {self._ort.__version__} has no {PROVIDERS[provider]} "
                                            f"(available: {available}; the GPU build is pip install onnxruntime-gpu)"),
                                   strict)
                return candidate
        raise BackendUnavailable(f"onnxruntime {self._ort.__version__} has none of {[PROVIDERS[c] for c in chain]}")

    def _provider_list(self, wanted: str, cache_dir: str | Path | None,
                       extra: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        if wanted == "cpu":
            return [(PROVIDERS["cpu"], dict(extra))]
        assert self._stream is not None  # created for every GPU provider
        stream_options = {"device_id": str(self._device.index), "has_user_compute_stream": "1",
                          "user_compute_stream": str(self._stream.cuda_stream)}
        cuda = (PROVIDERS["cuda"], dict(stream_options))
        if wanted == "cuda":
            cuda[1].update(extra)
            return [cuda]
        cache = Path(cache_dir) if cache_dir is not None else self.onnx_path.parent / "ort_trt_cache"
        cache.mkdir(parents=True, exist_ok=True)
        trt = {**stream_options,
               "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
               "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache),
               # fp16 only for graphs exported in fp16: an fp32 graph keeps its precision.
               "trt_fp16_enable": str(self.precision is Precision.FP16), **extra}
        return [(PROVIDERS["tensorrt"], trt), cuda]

    @property
    def uses_cuda_graph(self) -> bool:
        return self.cuda_graph_error is None

    def _open_session(self, wanted: str, cache_dir: str | Path | None, provider_options: dict[str, Any],
                      session_options: dict[str, Any]) -> Any:
        """The session; with CUDA graphs asked for, first with ``enable_cuda_graph``, then, if ONNX
        Runtime refuses it (a node outside the CUDA provider), without, announced."""
        if self.cuda_graph_error is None:
            try:
                return self._create_session(wanted, cache_dir, {"enable_cuda_graph": "1", **provider_options},
                                            session_options)
            except EngineError as exc:
                self.cuda_graph_error = f"ONNX Runtime refused enable_cuda_graph: {exc}"
                log.warning("onnxruntime: graph %r runs without CUDA graphs: %s", self.contract.name,
                            self.cuda_graph_error)
        return self._create_session(wanted, cache_dir, provider_options, session_options)

    def _create_session(self, wanted: str, cache_dir: str | Path | None, provider_options: dict[str, Any],
                        session_options: dict[str, Any]) -> Any:
        options = self._ort.SessionOptions()
        for key, value in session_options.items():
            if not hasattr(options, key):
                raise ValueError(f"session option {key!r} is not an attribute of onnxruntime.SessionOptions")
            setattr(options, key, value)
        providers = self._provider_list(wanted, cache_dir, provider_options)
        try:
            return self._ort.InferenceSession(str(self.onnx_path), sess_options=options,
                                              providers=[name for name, _ in providers],
                                              provider_options=[opts for _, opts in providers])
        except self._errors as exc:
            raise EngineError(f"graph {self.contract.name!r}: ONNX Runtime could not load {self.onnx_path} with "
                              f"{[name for name, _ in providers]}: {exc}") from exc

    def _check_used(self, wanted: str, strict: bool) -> None:
        """ONNX Runtime drops a provider that fails to initialise (missing CUDA/cuDNN/TensorRT
        libraries) with only a log line; compare what it runs on with what was asked for."""
        asked = PROVIDERS[wanted]
        if asked in self.providers:
            return
        used = self.providers[0]
        self._announce(Fallback(asked, used, f"the session did not register it (session providers "
                                              f"{list(self.providers)}); ONNX Runtime's log above says why, "
                                              "often missing CUDA, cuDNN or TensorRT libraries"), strict)

    def _stream_accepted(self) -> bool:
        """Whether the session's GPU provider reports our stream as its compute stream."""
        assert self._stream is not None
        try:
            options = self._session.get_provider_options()
        except self._errors:
            return False
        mine = str(self._stream.cuda_stream)
        return any(opts.get("user_compute_stream") == mine for opts in options.values())

    # ----------------------------------------------------------------------------- load-time checks

    def _check_io(self) -> None:
        where = f"{self.onnx_path} (graph {self.contract.name!r})"
        for kind, args, specs in (("inputs", self._session.get_inputs(), self.contract.inputs),
                                  ("outputs", self._session.get_outputs(), self.contract.outputs)):
            got = [a.name for a in args]
            want = [s.name for s in specs]
            if sorted(got) != sorted(want):
                raise EngineError(f"{where}: {kind} are {got}, the contract expects {want}; "
                                  "the file is not this graph, or was exported with other names — export it again")
            by_name = {a.name: a for a in args}
            for spec in specs:
                arg = by_name[spec.name]
                dtype = ORT_TYPES.get(arg.type, arg.type)
                if dtype != spec.dtype:
                    raise EngineError(f"{where}: {kind[:-1]} {spec.name!r} has element type {dtype}, "
                                      f"the contract expects {spec.dtype}")
                if len(arg.shape) != len(spec.shape):
                    raise EngineError(f"{where}: {kind[:-1]} {spec.name!r} has shape {arg.shape}, "
                                      f"the contract expects {list(spec.shape)}")
                for have, want_dim in zip(arg.shape, spec.shape):
                    if isinstance(want_dim, int) and isinstance(have, int) and have != want_dim:
                        raise EngineError(f"{where}: {kind[:-1]} {spec.name!r} has shape {arg.shape}, "
                                          f"the contract expects {list(spec.shape)} (another model's prior?)")

    # ----------------------------------------------------------------------------- running

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def provider(self) -> str:
        """The provider that runs the graph (ONNX Runtime's name, e.g. ``CUDAExecutionProvider``)."""
        return self.providers[0]

    def _infer(self, feeds: dict[str, torch.Tensor], dims: dict[str, int], stream: Any) -> dict[str, torch.Tensor]:
        if self._session is None:
            raise EngineError(f"graph {self.contract.name!r}: the ONNX Runtime engine was closed; open a new one")
        caller = caller_stream(stream, self._device)
        if caller is None:
            return self._run({name: t.contiguous() for name, t in feeds.items()}, self._outputs(dims, self._device))
        with torch.cuda.stream(caller):  # copies and outputs belong to the caller's stream
            if not self._on_gpu:
                # The GPU provider fell back to the CPU (announced at load): run on host copies.
                host = self._run({name: t.cpu().contiguous() for name, t in feeds.items()},
                                 self._outputs(dims, torch.device("cpu")))
                return {name: t.to(self._device) for name, t in host.items()}
            inputs = {name: t.contiguous() for name, t in feeds.items()}
            slot = self._graph_slot(inputs, dims) if self.uses_cuda_graph else None
            if slot is not None:
                return self._replay(slot, inputs, caller)
            outputs = self._outputs(dims, self._device)
        assert self._stream is not None  # created with every GPU provider
        if self._sync_caller_on_host:
            caller.synchronize()
        self._stream.wait_stream(caller)
        for tensor in (*inputs.values(), *outputs.values()):
            # The caching allocator must not hand this memory to another allocation while the
            # engine's stream may still use it.
            tensor.record_stream(self._stream)
        self._run(inputs, outputs, run_options=self._plain_run_options)
        caller.wait_stream(self._stream)
        return outputs

    def _replay(self, slot: _GraphSlot, inputs: dict[str, torch.Tensor],
                caller: torch.cuda.Stream) -> dict[str, torch.Tensor]:
        """One run through the CUDA graph of these shapes, with the caller's stream current: feeds
        copied into its fixed inputs, its fixed outputs copied out, both on that stream."""
        assert self._stream is not None
        for name, tensor in inputs.items():
            slot.inputs[name].copy_(tensor)
        if self._sync_caller_on_host:
            caller.synchronize()
        self._stream.wait_stream(caller)
        self._run(slot.inputs, slot.outputs, slot.binding, slot.run_options)
        caller.wait_stream(self._stream)
        return {name: tensor.clone() for name, tensor in slot.outputs.items()}

    def _graph_slot(self, inputs: dict[str, torch.Tensor], dims: dict[str, int]) -> _GraphSlot | None:
        """The fixed buffers of these shapes (allocated on the current stream the first time), or
        None once :data:`MAX_GRAPHS` other shapes have theirs."""
        key = tuple(tuple(inputs[spec.name].shape) for spec in self.contract.inputs)
        if key in self._graphs or len(self._graphs) >= MAX_GRAPHS:
            return self._graphs.get(key)
        fixed_in = {name: torch.empty_like(t, memory_format=torch.contiguous_format) for name, t in inputs.items()}
        fixed_out = self._outputs(dims, self._device)
        for tensor in (*fixed_in.values(), *fixed_out.values()):
            tensor.record_stream(self._stream)  # type: ignore[arg-type]
        slot = _GraphSlot(fixed_in, fixed_out, self._bind(fixed_in, fixed_out), self._run_options(len(self._graphs)))
        self._graphs[key] = slot
        return slot

    def _run_options(self, graph_id: int) -> Any:
        """RunOptions naming the CUDA graph to capture or replay (-1: none)."""
        options = self._ort.RunOptions()
        options.add_run_config_entry("gpu_graph_id", str(graph_id))
        return options

    def _outputs(self, dims: dict[str, int], device: torch.device) -> dict[str, torch.Tensor]:
        """Empty output tensors, shaped from the contract's dimensions bound by the inputs."""
        return {spec.name: torch.empty(spec.concrete(dims), dtype=TORCH_DTYPES[spec.dtype], device=device)
                for spec in self.contract.outputs}

    def _bind(self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> Any:
        """An IOBinding of contiguous inputs and preallocated outputs, by address."""
        binding = self._session.io_binding()
        for specs, tensors, bind in ((self.contract.inputs, inputs, binding.bind_input),
                                     (self.contract.outputs, outputs, binding.bind_output)):
            for spec in specs:
                t = tensors[spec.name]
                bind(spec.name, t.device.type, t.device.index or 0, np.dtype(spec.dtype), tuple(t.shape), t.data_ptr())
        return binding

    def _run(self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor], binding: Any = None,
             run_options: Any = None) -> dict[str, torch.Tensor]:
        """Run with ``binding`` (default: a new binding of ``inputs`` and ``outputs``)."""
        binding = binding if binding is not None else self._bind(inputs, outputs)
        try:
            self._session.run_with_iobinding(binding, run_options)
        except self._errors as exc:
            shapes = {name: tuple(t.shape) for name, t in inputs.items()}
            raise EngineError(f"graph {self.contract.name!r}: ONNX Runtime failed on {self.onnx_path.name} with "
                              f"inputs {shapes} ({self.provider}): {exc}") from exc
        return outputs

    def close(self) -> None:
        self._graphs = {}
        self._session = None
        self._stream = None

    def __repr__(self) -> str:
        fallback = f", fallback={str(self.fallback)!r}" if self.fallback else ""
        closed = ", closed" if self._session is None else ""
        graphs = ", cuda_graphs=True" if self.uses_cuda_graph else ""
        return (f"OnnxRuntimeEngine(graph={self.contract.name!r}, device={self._device}, "
                f"provider={self.provider}{graphs}{fallback}{closed})")


# --------------------------------------------------------------------------------------------- export folders


def onnxruntime_engines(onnx_dir: str | Path, device: str | int | torch.device = "cpu", provider: str = "auto",
                        strict: bool = False, precision: Precision | str | None = None, cuda_graphs: bool = True,
                        **options: Any) -> dict[str, Engine]:
    """The three graphs of an export folder as :class:`OnnxRuntimeEngine` s.

    Reads ``onnx_dir/manifest.json``, checks every file's sha256 and contract, and refuses a
    folder whose precision is not ``precision`` (None accepts the folder's own). ``cuda_graphs``:
    the denoising step replays CUDA graphs on the CUDA provider (its shapes do not depend on the
    image; the other two graphs run plainly). ``options`` go to :class:`OnnxRuntimeEngine`
    (``cache_dir``, ``provider_options``, ``session_options``).
    """
    manifest = ExportManifest.read(onnx_dir)
    if precision is not None and Precision.parse(precision) is not manifest.precision:
        raise ValueError(f"{manifest.path} holds {manifest.precision.value} graphs, {Precision.parse(precision).value} "
                         f"was asked for; export that precision or pass precision={manifest.precision.value!r}")
    contracts = graph_contracts(*manifest.prior_shape)
    files = {name: manifest.verified_file(name, contract) for name, contract in contracts.items()}
    engines: dict[str, Engine] = {}
    try:
        for name, contract in contracts.items():
            engines[name] = OnnxRuntimeEngine(files[name], contract, device, provider=provider, strict=strict,
                                              precision=manifest.precision,
                                              cuda_graphs=cuda_graphs and name == DENOISE_STEP, **options)
    except BaseException:
        for engine in engines.values():
            engine.close()
        raise
    return engines
