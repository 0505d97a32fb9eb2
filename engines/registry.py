"""The backends, in one table keyed by name: how to open each one and why it cannot run here.

    open_engines("torch", model=model, device="cuda:0", precision="fp16")
    open_engines("onnxruntime", artifacts="out/onnx", device="cuda:0")       # CUDA provider
    open_engines("onnxruntime-trt", artifacts="out/onnx", device="cuda:0")   # TensorRT provider
    open_engines("tensorrt", artifacts="out/engines", device="cuda:0", precision="fp16")

Each returns an :class:`EngineSet` (the three engines, the backend, device and precision, a
``describe()`` line, ``close()`` / context manager). :func:`available_backends` says, per name,
None (usable) or why not: the runtime's "auto" choice reads it and never imports a backend
library itself. Backend libraries are imported only when their backend is asked about.
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engines.artifacts import MANIFEST_NAME, ExportManifest
from engines.base import BackendUnavailable, Engine, EngineError, parse_device
from engines.contracts import GRAPH_NAMES, GraphContract, Precision
from engines.torch_settings import TorchSettings


@dataclass
class EngineSet:
    """The three engines of one backend: ``engines["le_dm" | "denoise_step" | "restormer"]``.

    ``num_timesteps`` is T, the length of the schedule baked into ``denoise_step`` (None when the
    artifacts do not say); ``manifest`` the export manifest the engines came from, if any.
    """

    engines: dict[str, Engine]
    backend: str
    device: torch.device
    precision: Precision
    num_timesteps: int | None = None
    source: str = ""
    manifest: dict[str, Any] | None = None
    closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        missing = [n for n in GRAPH_NAMES if n not in self.engines]
        if missing:
            raise EngineError(f"{self.backend} engine set from {self.source or '?'} lacks graphs {missing}")

    def __getitem__(self, name: str) -> Engine:
        return self.engines[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.engines)

    @property
    def contracts(self) -> dict[str, GraphContract]:
        return {name: engine.contract for name, engine in self.engines.items()}

    @property
    def prior_shape(self) -> tuple[int, int]:
        """(N, C'): the prior's tokens and channels, from the contracts."""
        fixed = self.engines["denoise_step"].contract.fixed_dims
        return int(fixed["tokens"]), int(fixed["channels"])

    @property
    def fallbacks(self) -> list[str]:
        """Announced provider fallbacks of the engines (ONNX Runtime), as 'graph: from -> to: why'."""
        found = {name: getattr(e, "fallback", None) for name, e in self.engines.items()}
        return [f"{name}: {fallback}" for name, fallback in found.items() if fallback is not None]

    def describe(self) -> str:
        """One line: backend, device, precision, source, what runs each graph, fallbacks."""
        parts = [f"{self.backend} on {self.device}, {self.precision.value}"]
        if self.source:
            parts.append(f"from {self.source}")
        providers = sorted({str(getattr(e, "provider")) for e in self.engines.values() if hasattr(e, "provider")})
        if providers:
            parts.append("provider " + "/".join(providers))
        modes = {getattr(e, "compile_mode", None) for e in self.engines.values()}
        compiled = sorted(str(m) for m in modes if m)
        if compiled:
            parts.append("torch.compile " + "/".join(compiled))
        if self.num_timesteps is not None:
            parts.append(f"T={self.num_timesteps}")
        if self.fallbacks:
            parts.append("FELL BACK: " + "; ".join(self.fallbacks))
        if self.closed:
            parts.append("closed")
        return ", ".join(parts)

    def close(self) -> None:
        """Close every engine. Safe to call twice."""
        for engine in self.engines.values():
            engine.close()
        self.closed = True

    def __enter__(self) -> "EngineSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EngineSet({self.describe()})"


# ------------------------------------------------------------------------------------------ loaders


def _need_artifacts(backend: str, artifacts: str | Path | None, what: str) -> Path:
    if artifacts is None:
        raise ValueError(f"backend {backend!r} runs {what}: pass artifacts=FOLDER")
    folder = Path(artifacts)
    if not folder.is_dir():
        raise FileNotFoundError(f"artifacts folder {folder} does not exist (backend {backend!r} needs {what})")
    return folder


def _engine_set(engines: dict[str, Engine], backend: str, device: torch.device, precision: Precision,
                folder: Path) -> EngineSet:
    """The set of engines read from ``folder``, with T and the manifest from the export manifest
    when the folder has one (TensorRT plans may sit in a folder of their own)."""
    manifest = ExportManifest.read(folder) if (folder / MANIFEST_NAME).is_file() else None
    if manifest is None:
        return EngineSet(engines, backend, device, precision, None, str(folder))
    return EngineSet(engines, backend, device, precision, manifest.num_timesteps, str(folder), manifest.data)


def _open_torch(*, model: Any, artifacts: Any, device: str, precision: Precision, strict: bool, cuda_graphs: bool,
                settings: TorchSettings | None = None) -> EngineSet:
    # cuda_graphs (the denoising loop's): the caller's loop (engines.denoise_loop) captures these
    # engines; their own graphs per image shape are settings.cuda_graphs.
    from engines.torch_backend import torch_engines
    from hidiff.model import HIDiff

    if model is None:
        raise ValueError("backend 'torch' runs a PyTorch model: pass model=HIDiff (or a weights path); "
                         "hidiff.default_model() is the embedded demo model")
    source = "model"
    if isinstance(model, (str, Path)):
        source = str(model)
        model = HIDiff.load(model)
    target = parse_device(device)
    engines = torch_engines(model, target, precision, settings)
    return EngineSet(engines, "torch", target, precision, model.schedule.num_timesteps, source)


def _onnxruntime_loader(provider: str) -> Callable[..., EngineSet]:
    def open_onnxruntime(*, model: Any, artifacts: Any, device: str, precision: Precision, strict: bool,
                         cuda_graphs: bool, provider: str = provider, **options: Any) -> EngineSet:
        from engines.onnxruntime_backend import onnxruntime_engines

        folder = _need_artifacts("onnxruntime", artifacts, "exported ONNX graphs (manifest.json + *.onnx)")
        target = parse_device(device)
        engines = onnxruntime_engines(folder, target, provider=provider, strict=strict, precision=precision,
                                      cuda_graphs=cuda_graphs, **options)
        name = "onnxruntime" if provider == "auto" else f"onnxruntime-{'trt' if provider == 'tensorrt' else provider}"
        return _engine_set(engines, name, target, precision, folder)

    return open_onnxruntime


def tensorrt_engines(plan_dir: str | Path, contracts: Mapping[str, GraphContract] | None = None,
                     device: int = 0, **options: Any) -> dict[str, Engine]:
    """``plan_dir/NAME.plan`` for the three graphs as TensorRT engines (contracts default to the
    ones in each plan's manifest). Untested here: no GPU, no TensorRT on this machine."""
    from engines.tensorrt_backend import TensorRTEngine

    engines: dict[str, Engine] = {}
    try:
        for name in GRAPH_NAMES:
            contract = contracts[name] if contracts is not None else None
            engines[name] = TensorRTEngine(Path(plan_dir) / f"{name}.plan", contract, device=device, **options)
    except BaseException:
        for engine in engines.values():
            engine.close()
        raise
    return engines


def _open_tensorrt(*, model: Any, artifacts: Any, device: str, precision: Precision, strict: bool,
                   cuda_graphs: bool, **options: Any) -> EngineSet:
    # cuda_graphs (the denoising loop's): the caller's loop (engines.denoise_loop) captures these engines.

    folder = _need_artifacts("tensorrt", artifacts, "TensorRT plans (*.plan built by export/build_engines.py)")
    target = parse_device(device)
    if target.type != "cuda":
        raise ValueError(f"backend 'tensorrt' runs on CUDA devices, device={device!r} was given")
    engines = tensorrt_engines(folder, None, target.index or 0, precision=precision.value, **options)
    return _engine_set(engines, "tensorrt", target, precision, folder)


def _open_aoti(*, model: Any, artifacts: Any, device: str, precision: Precision, strict: bool, cuda_graphs: bool,
               **options: Any) -> EngineSet:
    # cuda_graphs: the caller's loop (engines.denoise_loop) captures the denoising steps, and the
    # engines replay each image shape as their own CUDA graph; off, neither is captured.
    from engines.aoti_backend import aoti_engines

    folder = _need_artifacts("aoti", artifacts, "AOTInductor packages (*.pt2 built by export/build_engines.py)")
    target = parse_device(device)
    engines = aoti_engines(folder, target, precision, cuda_graphs=cuda_graphs and target.type == "cuda", **options)
    manifest = getattr(engines["denoise_step"], "manifest").as_dict()
    schedule = manifest.get("model", {}).get("config", {}).get("diffusion_schedule", {})
    timesteps = int(schedule["timesteps"]) if "timesteps" in schedule else None
    return EngineSet(engines, "aoti", target, precision, timesteps, str(folder), manifest)


# ------------------------------------------------------------------------------------------ availability


def _torch_reason(device: torch.device) -> str | None:
    if device.type == "cpu":
        return None
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU"
    index = device.index or 0
    if index >= torch.cuda.device_count():
        return f"cuda:{index} requested, only {torch.cuda.device_count()} CUDA device(s) visible"
    return None


def _onnxruntime_reason(device: torch.device, provider: str) -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for CUDA)"
    if provider == "cpu":
        return None if device.type == "cpu" else "the CPU provider runs on device='cpu'"
    if provider == "auto" and device.type == "cpu":
        return None
    if device.type == "cpu":
        return f"the {provider} provider needs a CUDA device"
    gpu = _torch_reason(device)
    if gpu is not None:
        return gpu
    from engines.onnxruntime_backend import PROVIDERS, import_onnxruntime

    ort = import_onnxruntime(cuda=True)
    available = ort.get_available_providers()
    needed = PROVIDERS["tensorrt" if provider == "tensorrt" else "cuda"]
    if needed not in available:
        return (f"onnxruntime {ort.__version__} has no {needed} (it has {available}); "
                + ("install onnxruntime-gpu" if needed == PROVIDERS["cuda"] else "install TensorRT for onnxruntime-gpu"))
    return None


def _tensorrt_reason(device: torch.device) -> str | None:
    if device.type != "cuda":
        return "TensorRT runs on CUDA devices only"
    gpu = _torch_reason(device)
    if gpu is not None:
        return gpu
    if not any(importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_bindings", "tensorrt_rtx")):
        return "no tensorrt module (pip install tensorrt-cu12 or tensorrt-cu13)"
    try:
        backend = importlib.import_module("engines.tensorrt_backend")
        backend.import_tensorrt()
    except (BackendUnavailable, ImportError) as exc:
        return str(exc)
    return None


def _aoti_reason(device: torch.device) -> str | None:
    # torch's package loader itself: importing torch._inductor to look would cost seconds.
    if not hasattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader"):
        return f"torch {torch.__version__} cannot load AOTInductor packages (torch >= 2.6 can)"
    return _torch_reason(device)


@dataclass(frozen=True)
class Backend:
    """One row of the table: its loader, why it cannot run on a device, and what artifacts it reads."""

    open: Callable[..., EngineSet]
    unavailable: Callable[[torch.device], str | None]
    artifact_glob: str | None  # files the artifacts folder must hold; None: runs a model, not artifacts


BACKENDS: dict[str, Backend] = {
    "torch": Backend(_open_torch, _torch_reason, None),
    "onnxruntime": Backend(_onnxruntime_loader("auto"), lambda d: _onnxruntime_reason(d, "auto"), "*.onnx"),
    "onnxruntime-cuda": Backend(_onnxruntime_loader("cuda"), lambda d: _onnxruntime_reason(d, "cuda"), "*.onnx"),
    "onnxruntime-trt": Backend(_onnxruntime_loader("tensorrt"), lambda d: _onnxruntime_reason(d, "tensorrt"), "*.onnx"),
    "onnxruntime-cpu": Backend(_onnxruntime_loader("cpu"), lambda d: _onnxruntime_reason(d, "cpu"), "*.onnx"),
    "tensorrt": Backend(_open_tensorrt, _tensorrt_reason, "*.plan"),
    "aoti": Backend(_open_aoti, _aoti_reason, "*.pt2"),
}


def available_backends(device: str | int | torch.device = "cpu",
                       artifacts: str | Path | None = None) -> dict[str, str | None]:
    """``{backend: None}`` for each backend that can run on ``device``, else ``{backend: why not}``
    (no onnxruntime, no CUDA provider, no tensorrt module, no GPU). With ``artifacts``, a backend
    that reads files also needs them there (``*.onnx`` + manifest, ``*.plan``). ValueError for a
    string that is no device at all."""
    parsed = parse_device(device, must_exist=False)  # availability reports a missing device, it does not raise
    folder = Path(artifacts) if artifacts is not None else None
    reasons: dict[str, str | None] = {}
    for name, row in BACKENDS.items():
        why = row.unavailable(parsed)
        if why is None and folder is not None and row.artifact_glob is not None:
            if not folder.is_dir():
                why = f"artifacts folder {folder} does not exist"
            elif not any(folder.glob(row.artifact_glob)):
                why = f"no {row.artifact_glob} in {folder}"
            elif row.artifact_glob == "*.onnx" and not (folder / MANIFEST_NAME).is_file():
                why = f"no {MANIFEST_NAME} in {folder} (export writes it beside the graphs)"
        reasons[name] = why
    return reasons


def open_engines(backend: str, *, model: Any = None, artifacts: str | Path | None = None,
                 device: str | int | torch.device = "cpu", precision: Precision | str = "fp32",
                 strict: bool = False, cuda_graphs: bool = True, **options: Any) -> EngineSet:
    """Open the three engines of ``backend`` (a key of :data:`BACKENDS`).

    - ``model``: a :class:`hidiff.HIDiff` or weights path (``torch``);
      ``artifacts``: the export folder (``onnxruntime*``: manifest.json + ONNX graphs;
      ``tensorrt``: ``NAME.plan`` + ``NAME.plan.json``).
    - ``precision``: "fp32" or "fp16"; artifacts of another precision are refused by name.
    - ``strict``: raise :class:`~engines.base.BackendUnavailable` instead of an announced fallback.
    - ``cuda_graphs``: the denoising loop in CUDA graphs. The torch and TensorRT engines are
      captured by the caller's loop (:mod:`engines.denoise_loop`); ONNX Runtime's CUDA provider,
      which torch cannot capture, replays the denoising step as a graph of its own.
    - ``options``: backend-specific (torch: ``settings``, a
      :class:`~engines.torch_settings.TorchSettings`, default
      :func:`~engines.torch_settings.default_settings` for the device and precision;
      onnxruntime: ``provider``, ``cache_dir``, ``provider_options``, ``session_options``;
      tensorrt: ``flavour``; aoti: none, its engines replay each image shape as a CUDA graph when
      ``cuda_graphs`` is on).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[backend].open(model=model, artifacts=artifacts, device=device,
                                  precision=Precision.parse(precision), strict=strict, cuda_graphs=cuda_graphs,
                                  **options)
