"""Which backend runs the graphs: the "auto" choice, with the reasons for every one skipped.

Order (first that opens wins), as TensorRT > AOTInductor > ONNX Runtime CUDA > PyTorch CUDA > CPU:

1. ``tensorrt``          plans (``*.plan``) in the artifacts folder, CUDA device
2. ``aoti``              AOTInductor packages for CUDA (``*.cuda-*.pt2``) in the folder
3. ``onnxruntime-cuda``  ONNX graphs (``*.onnx`` + manifest.json) in the folder, CUDA execution provider
4. ``torch``             a HIDiff model (``model=``, or the embedded default when no artifacts are
                         given), CUDA (with ``precision="auto"`` in fp16, in the form the
                         caller's TorchSettings give; default the fastest)
5. ``aoti``              AOTInductor packages for the CPU (``*.cpu-*.pt2``)
6. ``onnxruntime-cpu``   the ONNX graphs on the CPU
7. ``torch``             the model on the CPU

Each candidate is opened strictly (an ONNX Runtime session that would quietly run on another
provider counts as failing), so the order above is what really runs.

A candidate whose inputs were not given (no plans, no graphs, no model) is simply not a
candidate. One whose inputs *were* given but that cannot open (library missing, plan built for
another GPU, no CUDA device) is a *fallback*: it is logged as a warning, and ``strict=True``
raises :class:`~runtime.errors.BackendError` with the reason instead of falling back. A backend
named explicitly never falls back.

Engines are opened through :mod:`engines.registry`; this module imports no backend library.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import engines.base
from engines import registry
from runtime.errors import BackendError

log = logging.getLogger("runtime")

# "auto" and the names of engines.registry.BACKENDS, the one table of backends (importing the
# registry imports no backend library).
BACKENDS = ("auto", *registry.BACKENDS)
PRECISION_AUTO = "auto"
# Exceptions that mean "this backend cannot run here", as opposed to a bug in our code.
OPEN_ERRORS = (RuntimeError, ImportError, OSError, ValueError, KeyError)


def parse_device(device: int | str | torch.device) -> torch.device:
    """:func:`engines.base.parse_device` without requiring the device to exist: a CUDA device that
    is missing is a reason to fall back, which :func:`choose` reports."""
    return engines.base.parse_device(device, must_exist=False)


@dataclass(frozen=True)
class Candidate:
    backend: str
    device: torch.device
    # What the candidate needs was given (plans, graphs, a model): failing to open it is a fallback.
    expected: bool


@dataclass
class Choice:
    """The opened engines, why this backend, and why each one before it was passed over."""

    engines: Any  # engines.registry.EngineSet
    backend: str
    device: torch.device
    reason: str
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def fell_back(self) -> bool:
        return bool(self.skipped)


def artifact_files(folder: str | Path | None) -> tuple[list[Path], list[Path]]:
    """(plans, onnx graphs) in an artifacts folder; ([], []) for None."""
    if folder is None:
        return [], []
    folder = Path(folder)
    if not folder.is_dir():
        raise BackendError(f"engines folder {folder} does not exist or is not a folder; pass the folder "
                           "written by export (ONNX graphs + manifest.json, TensorRT *.plan)")
    return sorted(folder.glob("*.plan")), sorted(folder.glob("*.onnx"))


def candidates(device: torch.device, artifacts: str | Path | None, model_given: bool) -> list[Candidate]:
    """The auto order for this request, with which candidates were asked for by the inputs."""
    plans, graphs = artifact_files(artifacts)
    torch_wanted = model_given or artifacts is None
    cpu = torch.device("cpu")
    order: list[Candidate] = []
    if device.type == "cuda":
        order += [Candidate("tensorrt", device, bool(plans)), Candidate("aoti", device, _has_packages(artifacts, "cuda")),
                  Candidate("onnxruntime-cuda", device, bool(graphs)), Candidate("torch", device, torch_wanted)]
    order += [Candidate("aoti", cpu, _has_packages(artifacts, "cpu")), Candidate("onnxruntime-cpu", cpu, bool(graphs)),
              Candidate("torch", cpu, torch_wanted)]
    return order


def _has_packages(folder: str | Path | None, device_type: str) -> bool:
    """Whether the folder holds AOTInductor packages for this device type (``NAME.cpu-fp32.pt2``)."""
    return folder is not None and any(Path(folder).glob(f"*.{device_type}-*.pt2"))


def _label(c: Candidate) -> str:
    return f"{c.backend} on {c.device}"


def _missing_input(c: Candidate, artifacts: str | Path | None) -> str:
    if c.backend == "tensorrt":
        return f"no *.plan in {artifacts}" if artifacts is not None else "no engines folder given"
    if c.backend == "aoti":
        return f"no *.{c.device.type}-*.pt2 in {artifacts}" if artifacts is not None else "no engines folder given"
    if c.backend.startswith("onnxruntime"):
        return f"no *.onnx in {artifacts}" if artifacts is not None else "no engines folder given"
    return "an engines folder was given and no model= (the PyTorch backend needs a model)"


def auto_precision(backend: str, device: torch.device, artifacts: str | Path | None) -> str:
    """``precision="auto"`` for a candidate: a PyTorch model runs fp16 on a CUDA device (its fastest
    form) and fp32 on the CPU; artifacts run in the precision they were made in."""
    if backend == "torch":
        return "fp16" if device.type == "cuda" else "fp32"
    return artifact_precision(backend, artifacts, device)


def artifact_precision(backend: str, artifacts: str | Path | None, device: torch.device | None = None) -> str:
    """The precision the artifacts were made in ("fp32" for a PyTorch model or when unknown):
    the export manifest for ONNX graphs, the plan's own manifest for TensorRT, the packages'
    names for AOTInductor (FP16 on CUDA where there are such packages)."""
    if artifacts is None or backend == "torch":
        return "fp32"
    try:
        if backend == "aoti":
            from engines.aoti_backend import default_precision

            return default_precision(artifacts, device or torch.device("cpu")).value
        if backend == "tensorrt":
            from engines.plan import PlanManifest, manifest_path, plan_path_for

            return PlanManifest.read(manifest_path(plan_path_for(artifacts, "restormer"))).precision
        from engines.artifacts import ExportManifest

        return ExportManifest.read(artifacts).precision.value
    except (OSError, ValueError, KeyError, RuntimeError):
        return "fp32"  # the backend's own check then names what is wrong with the artifacts


def _why_chosen(c: Candidate, artifacts: str | Path | None, model: Any) -> str:
    if c.backend == "tensorrt":
        return f"TensorRT plans in {artifacts}"
    if c.backend == "aoti":
        return f"AOTInductor packages in {artifacts} for {c.device.type}"
    if c.backend.startswith("onnxruntime"):
        return f"ONNX graphs in {artifacts}, {'CUDA' if c.device.type == 'cuda' else 'CPU'} execution provider"
    return f"PyTorch model on {c.device}" + ("" if model is not None else " (the embedded default model)")


def choose(backend: str, device: torch.device, artifacts: str | Path | None, model: Any,
           precision: str, strict: bool, options: dict[str, Any], torch_settings: Any = None) -> Choice:
    """Open the engines for ``backend`` ("auto" or a name) and say why.

    ``options`` go to every candidate's :func:`~engines.registry.open_engines`;
    ``torch_settings`` (a :class:`~engines.torch_settings.TorchSettings` or None) to the PyTorch
    candidates only, unchanged. Raises BackendError when nothing opens, or (``strict``) when auto
    would fall back.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {list(BACKENDS)}")
    usable_cache: dict[str, dict[str, str | None]] = {}

    def unusable(c: Candidate) -> str | None:
        key = str(c.device)
        if key not in usable_cache:
            usable_cache[key] = registry.available_backends(key)
        return usable_cache[key].get(c.backend, f"backend {c.backend!r} is unknown to engines.registry")

    def open_one(c: Candidate, strict_open: bool) -> Any:
        wanted = precision if precision != PRECISION_AUTO else auto_precision(c.backend, c.device, artifacts)
        if c.backend == "torch":
            source = {"model": model, "settings": torch_settings}
        else:
            source = {"artifacts": artifacts}
        return registry.open_engines(c.backend, device=str(c.device), precision=wanted, strict=strict_open,
                                     **source, **options)

    if backend != "auto":
        c = Candidate(backend, device, True)
        reason = unusable(c)
        if reason is not None:
            raise BackendError(f"backend {backend!r} on {device} is not usable: {reason}")
        try:
            engines = open_one(c, strict)
        except OPEN_ERRORS as exc:
            raise BackendError(f"backend {backend!r} on {device} failed to open: {exc}") from exc
        return Choice(engines, backend, device, "requested explicitly")

    skipped: dict[str, str] = {}  # candidates that were asked for by the inputs but cannot run
    not_asked: list[str] = []
    order = candidates(device, artifacts, model is not None)
    if device.type == "cuda" and not torch.cuda.is_available():
        skipped[str(device)] = "requested, but torch sees no CUDA device"
    for c in order:
        label = _label(c)
        if not c.expected:
            not_asked.append(f"{label}: {_missing_input(c, artifacts)}")
            continue
        if c.device.type == "cuda" and not torch.cuda.is_available():
            continue  # said once above
        why = unusable(c)
        if why is None:
            try:
                engines = open_one(c, True)
            except OPEN_ERRORS as exc:
                why = f"failed to open: {type(exc).__name__}: {exc}"
            else:
                if strict and skipped:
                    engines.close()
                    raise BackendError(f"strict=True refuses to fall back to {label}: "
                                       + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
                reason = "auto: " + _why_chosen(c, artifacts, model)
                if skipped:
                    reason += "; fell back from " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
                if not_asked:
                    reason += "; not applicable: " + "; ".join(not_asked)
                return Choice(engines, c.backend, c.device, reason, skipped)
        skipped[label] = why
        if strict:
            raise BackendError(f"strict=True: {label} was expected to run but cannot: {why}")
    tried = [f"{k}: {v}" for k, v in skipped.items()] + not_asked
    raise BackendError("no backend could run: " + "; ".join(tried))
