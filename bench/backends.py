"""The benchmark's columns: one small table of backends (an engines.registry backend at one
precision, with its PyTorch settings or its options), why one cannot run here, how it is opened,
and the memory a case used."""
from __future__ import annotations

import copy
import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engines.contracts import LE_DM
from engines.torch_settings import TorchSettings
from hidiff.model import HIDiff

REFERENCE = "torch-fp32"  # every case is compared with eager FP32, which runs first
MIB = 1024.0 * 1024.0


@dataclass(frozen=True)
class BenchBackend:
    """One column of the benchmark: a backend of :mod:`engines.registry` at one precision.

    ``engine_backend`` is the registry's key; ``torch_settings`` how the PyTorch backend runs the
    model (None for the other backends); ``options`` further open_engines keywords (ONNX Runtime's);
    ``needs_artifacts``: it runs exported ONNX graphs (``--onnx`` / ``--engines``), TensorRT
    plans (``--plans`` / ``--engines``) or AOTInductor packages (``--packages`` / ``--engines``)
    rather than the PyTorch model, and its precision is then the artifacts' own (``precision`` is
    the usual one).
    """

    name: str
    engine_backend: str
    precision: str
    devices: tuple[str, ...]
    needs_artifacts: bool = False
    options: tuple[tuple[str, Any], ...] = ()
    torch_settings: TorchSettings | None = None

    @property
    def is_tensorrt(self) -> bool:
        return self.engine_backend == "tensorrt"

    @property
    def is_aoti(self) -> bool:
        return self.engine_backend == "aoti"

    def runtime_backend(self) -> tuple[str, dict[str, Any]]:
        """The same engines through :class:`runtime.Deblurrer`: its ``backend`` and the keywords that
        pick these engines (``torch_settings``, or ``engine_options``: the runtime names ONNX Runtime
        once and takes the provider as an option)."""
        if self.torch_settings is not None:
            return self.engine_backend, {"torch_settings": self.torch_settings}
        options = dict(self.options)
        if self.engine_backend.startswith("onnxruntime-"):
            provider = self.engine_backend.split("-", 1)[1]
            return "onnxruntime", {"engine_options": {"provider": "tensorrt" if provider == "trt" else provider,
                                                      **options}}
        return self.engine_backend, {"engine_options": options}


def _torch(name: str, settings: TorchSettings, precision: str = "fp16", devices: tuple[str, ...] = ("cuda",)
           ) -> BenchBackend:
    return BenchBackend(name, "torch", precision, devices, torch_settings=settings)


EAGER, CHANNELS_LAST, COMPILED, FASTEST = (TorchSettings.preset(n) for n in ("eager", "channels-last", "compiled",
                                                                            "fastest"))

# The small table that drives everything; the names are what --backends takes. The torch-* columns
# are presets and, for before/after comparisons, presets with one field changed.
BENCH_BACKENDS: dict[str, BenchBackend] = {
    b.name: b
    for b in (
        BenchBackend("tensorrt", "tensorrt", "fp16", ("cuda",), needs_artifacts=True),
        # AOTInductor packages of export/build_engines.py: CUDA FP16 on a GPU, CPU FP32 on the CPU.
        BenchBackend("aoti", "aoti", "fp16", ("cuda", "cpu"), needs_artifacts=True),
        BenchBackend("onnxruntime-trt", "onnxruntime-trt", "fp16", ("cuda",), needs_artifacts=True),
        BenchBackend("onnxruntime-cuda", "onnxruntime-cuda", "fp16", ("cuda",), needs_artifacts=True),
        # The CUDA provider with its NHWC kernels (ONNX Runtime converts the NCHW graph's layout).
        BenchBackend("onnxruntime-cuda-nhwc", "onnxruntime-cuda", "fp16", ("cuda",), needs_artifacts=True,
                     options=(("provider_options", {"prefer_nhwc": "1"}),)),
        BenchBackend("onnxruntime-cpu", "onnxruntime-cpu", "fp32", ("cpu",), needs_artifacts=True),
        _torch("torch-compile-fp16", COMPILED),
        _torch("torch-compile-fp16-unaligned", COMPILED.replace(pad_channels=False)),
        _torch("torch-compile-fp16-fused", COMPILED.replace(fuse_gdfn_gate=True)),
        _torch("torch-compile-fp16-fused-graphs", COMPILED.replace(fuse_gdfn_gate=True, cuda_graphs=True)),
        _torch("torch-compile-fp16-fused-norms", FASTEST.replace(cuda_graphs=False)),
        _torch("torch-compile-fp16-fused-norms-graphs", FASTEST),
        _torch("torch-fp16-nhwc", CHANNELS_LAST),
        _torch("torch-fp16-nhwc-fused", CHANNELS_LAST.replace(fuse_gdfn_gate=True)),
        _torch("torch-fp16-nhwc-unaligned", CHANNELS_LAST.replace(pad_channels=False)),
        # The baselines: the eager model as a user runs it (.half() / float32, default memory layout).
        _torch("torch-fp16", EAGER),
        _torch("torch-fp32", EAGER, "fp32", ("cpu", "cuda")),
    )
}
# Compiled columns are not defaults: they compile again for every new shape.
DEFAULT_BACKENDS = {
    "cuda": "tensorrt,onnxruntime-cuda,torch-fp16-nhwc,torch-fp16,torch-fp32",
    "cpu": "onnxruntime-cpu,torch-fp32",
}


def unavailable_reason(backend: BenchBackend, device: str, artifacts: Path | None) -> str | None:
    """Why ``backend`` cannot run on ``device`` with ``artifacts`` (None: it can), from the
    registry's :func:`~engines.registry.available_backends` (library, provider, GPU, files)."""
    from engines.registry import available_backends

    device_type = torch.device(device).type
    if device_type not in backend.devices:
        return f"runs on {' or '.join(backend.devices)}, this run is on {device}"
    if backend.needs_artifacts and artifacts is None:
        what, flag = (("TensorRT plans", "--plans") if backend.is_tensorrt else
                      ("AOTInductor packages", "--packages") if backend.is_aoti else ("exported ONNX graphs", "--onnx"))
        return f"needs {what}: pass {flag} DIR or --engines DIR"
    present = available_backends(device, artifacts=artifacts)
    if backend.engine_backend not in present:
        return f"engine backend {backend.engine_backend!r} is not in engines.registry"
    return present[backend.engine_backend]


def artifact_precision(backend: BenchBackend, artifacts: Path | None, device: str = "cuda") -> str:
    """The precision the artifacts were exported or built in (their manifest's ``precision``; the
    packages' for ``device``); the backend's usual one for the PyTorch backends or when no manifest says."""
    if artifacts is None:
        return backend.precision
    if backend.is_aoti:
        from engines.aoti_backend import default_precision

        return default_precision(artifacts, device).value
    manifests = ([plan_manifest(artifacts, LE_DM)] if backend.is_tensorrt else []) + [artifacts / "manifest.json"]
    for path in manifests:
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("precision")
        except (OSError, ValueError, AttributeError):
            continue
        if value in ("fp32", "fp16"):
            return str(value)
    return backend.precision


def plan_manifest(plans_dir: Path, graph: str) -> Path:
    """``plans_dir/graph.plan.json``, where engines/plan.py keeps a plan's manifest."""
    from engines.plan import manifest_path, plan_path_for

    return manifest_path(plan_path_for(plans_dir, graph))


def open_bench_backend(backend: BenchBackend, model: HIDiff | None, device: str, artifacts: Path | None,
                       precision: str, cuda_graphs: bool = True) -> Any:
    """The registry's EngineSet for ``backend``; ``cuda_graphs``: the denoising loop's (see
    :func:`engines.registry.open_engines`). Torch backends get their own copy of the model, so a
    backend that casts or compiles it cannot change what the next one runs."""
    from engines.registry import open_engines

    if backend.needs_artifacts:
        source: dict[str, Any] = {"artifacts": artifacts}
    else:
        if model is None:
            raise ValueError(f"backend {backend.name} runs the PyTorch model: pass --weights, --net-g/--net-le-dm/--net-d "
                             "or --preset")
        source = {"model": copy.deepcopy(model), "settings": backend.torch_settings}
    return open_engines(backend.engine_backend, device=device, precision=precision, strict=True,
                        cuda_graphs=cuda_graphs, **source, **dict(backend.options))


def device_used_bytes(device: torch.device) -> int | None:
    """Used memory of the whole device (cudaMemGetInfo): sees TensorRT and ONNX Runtime too.
    None on an integrated GPU (Jetson), where cudaMemGetInfo counts the system's memory."""
    if device.type != "cuda" or torch.cuda.get_device_properties(device).is_integrated:
        return None
    free, total = torch.cuda.mem_get_info(device)
    return int(total - free)


def memory_figures(backend: BenchBackend, device: torch.device, used_before: int | None,
                   cold_peak_mb: float | None) -> dict[str, Any]:
    """Memory of one case, read after its timed loop: torch's steady-state peaks (after the
    first call), the first call's peak, and the device-wide growth since the engines opened."""
    if device.type != "cuda":
        return {
            "torch_max_allocated_mb": None,
            "torch_max_reserved_mb": None,
            "cold_torch_max_allocated_mb": None,
            "device_used_delta_mb": None,
            "note": "CPU run: device memory is not measured",
        }
    used_now = device_used_bytes(device)
    delta = None if used_before is None or used_now is None else (used_now - used_before) / MIB
    if backend.engine_backend.startswith("torch"):
        note = ("torch peaks include the weights (steady state after the first call; the first call's apart); "
                "device_used_delta is cudaMemGetInfo after the timed loop minus before the engines were opened "
                "(device-wide: torch's cache and other processes count too)")
    else:
        note = (f"{backend.engine_backend} allocates its weights and workspaces outside torch: the torch peaks "
                "count only the I/O and pre/post-processing tensors; device_used_delta (cudaMemGetInfo, device-wide) "
                "includes the engines")
    if used_now is None:  # an integrated GPU: the torch peaks are the figures
        note = ("integrated GPU: device_used_delta is not measured (cudaMemGetInfo counts the system's memory "
                "there); the torch peaks count torch's allocations only (TensorRT and ONNX Runtime allocate outside "
                "torch)")
    return {
        "torch_max_allocated_mb": torch.cuda.max_memory_allocated(device) / MIB,
        "torch_max_reserved_mb": torch.cuda.max_memory_reserved(device) / MIB,
        "cold_torch_max_allocated_mb": cold_peak_mb,
        "device_used_delta_mb": delta,
        "note": note,
    }


def free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
