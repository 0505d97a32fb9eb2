"""Build AOTInductor packages (``.pt2``) of the three graphs, each with its manifest beside it.

    build_aoti_packages(model, "out", device="cpu")                    # CPU FP32, dynamic shapes
    build_aoti_packages(model, "out", device="cuda", shapes=[(1, 720, 1280)])  # CUDA FP16 + one tuned shape

Each graph gets a dynamic package (batch 1..64, height and width any multiple of 8 up to 8192)
and, for the image graphs, one package per shape in ``shapes`` (compiled and, on CUDA, autotuned
for that shape alone). What is compiled is the PyTorch backend's form for the device
(:func:`engines.torch_backend.torch_engines`): plain FP32 on the CPU; on CUDA channels-last with
aligned channels, in the fastest preset's inductor mode, and with ``fuse_kernels=True`` the fused Triton
kernels. The trace takes each kernel's ``triton_op`` form (``hidiff::NAME_packaged``, see
``engines.kernels``), which AOTInductor compiles into the package: no Python runs for them where
the package runs. A project op still called through AOTInductor's proxy executor is listed in the
manifest (``custom_ops``) and imported by the backend before the package opens.
``export/build_engines.py`` (:func:`build_machine_packages`) compiles the kernels into the CUDA FP16
packages and writes a per-shape package at each TensorRT profile's optimum shape (1x720x1280 by
default), beside the dynamic ones; docs/benchmarks.md has the measurements that chose this.

A package whose manifest matches the model, options, shape, device and torch is reused; a
missing, foreign, stale or corrupt one is rebuilt, and the report says why. Each package is
compiled into a temporary folder inside ``out_dir`` and renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from engines.aoti_backend import (
    PackageManifest,
    PackageRequirements,
    Shape,
    manifest_path,
    needs_rebuild,
    package_name,
    target_facts,
)
from engines.base import parse_device
from engines.contracts import GRAPH_NAMES, IMAGE_MULTIPLE, GraphContract, Precision, graph_contracts
from engines.kernels import support as kernel_support
from engines.torch_settings import TorchSettings
from export.progress import Heartbeat

if TYPE_CHECKING:
    from hidiff.model import HIDiff

IMAGE_GRAPHS = ("le_dm", "restormer")  # the graphs whose work depends on the frame size

# Inductor's mode for CUDA packages: the fastest PyTorch form's, the one measured; CUDA graphs are
# the backend's own (per shape).
CUDA_COMPILE_MODE = TorchSettings.preset("fastest").compile_mode or "default"


@dataclass(frozen=True)
class PackageResult:
    """One package of a build: ``status`` "built" or "reused", ``reason`` why it was (re)built."""

    graph: str
    path: Path
    status: str
    reason: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.path.name}: {self.status} in {self.seconds:.1f} s{why}"


def build_options(device: torch.device, precision: Precision, fuse_kernels: bool) -> dict[str, Any]:
    """How the graphs are prepared and compiled for ``device``; stored in each manifest."""
    if device.type != "cuda":
        if precision is not Precision.FP32 or fuse_kernels:
            raise ValueError(f"CPU packages are FP32 without fused kernels; got precision {precision.value}, "
                             f"fuse_kernels={fuse_kernels}")
        return {"channels_last": False, "align_channels": False, "fuse_kernels": False, "inductor": {}}
    from torch._inductor import list_mode_options

    return {"channels_last": True, "align_channels": precision is Precision.FP16, "fuse_kernels": fuse_kernels,
            "inductor": dict(list_mode_options(CUDA_COMPILE_MODE))}


def prepared_modules(model: "HIDiff", device: torch.device, precision: Precision,
                     options: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """The three graph modules as the PyTorch backend runs them with ``options`` (a copy of the model)."""
    from engines.torch_backend import TorchEngine, torch_engines

    fused = bool(options["fuse_kernels"])
    settings = TorchSettings(channels_last=options["channels_last"], pad_channels=options["align_channels"],
                             fuse_gdfn_gate=fused, fuse_block_norms=fused, fuse_prior_attention=fused)
    engines = torch_engines(model, device, precision, settings)
    modules = {}
    for name, engine in engines.items():
        assert isinstance(engine, TorchEngine) and engine.module is not None  # torch_engines makes these
        modules[name] = engine.module
    return modules


def source_files(modules: Iterable[torch.nn.Module]) -> list[Path]:
    """The source files of the project modules the graphs are made of, with every kernel file
    where a fused module is among them (the fused modules call the kernels' files)."""
    names = {getattr(sys.modules[type(m).__module__], "__file__", None) for module in modules for m in module.modules()
             if type(m).__module__.split(".")[0] in ("hidiff", "engines")}
    files = {Path(name).resolve() for name in names if name}
    kernels = Path(kernel_support.__file__).resolve().parent
    if any(file.parent == kernels for file in files):
        files |= {path.resolve() for path in kernels.glob("*.py")}
    return sorted(files)


def source_sha256(model: "HIDiff", modules: Iterable[torch.nn.Module]) -> str:
    """sha256 of what the packages compute: the configuration, every weight, and
    :func:`source_files` (a code change makes the packages stale)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    for file in source_files(modules):
        digest.update(file.read_bytes())
    return digest.hexdigest()


def dynamic_ranges(contract: GraphContract) -> dict[str, list[int]]:
    """The ranges of the dynamic package's axes: the ONNX export's (batch 1..64, sides 8..8192)."""
    from export.onnx_export import MAX_BATCH, MAX_SIDE

    axes = {name for spec in contract.inputs for name in spec.dynamic_axes.values()}
    ranges = {"batch": [1, MAX_BATCH], "height": [IMAGE_MULTIPLE, MAX_SIDE], "width": [IMAGE_MULTIPLE, MAX_SIDE]}
    return {axis: r for axis, r in ranges.items() if axis in axes}


def _example_inputs(contract: GraphContract, num_timesteps: int, shape: Shape | None,
                    device: torch.device) -> tuple[torch.Tensor, ...]:
    from export.onnx_export import example_inputs

    if shape is None:  # the ONNX export's example: batch 2 (torch.export would specialise a batch of 1)
        return tuple(t.to(device) for t in example_inputs(contract, num_timesteps))
    dims = {"batch": shape[0], "height": shape[1], "width": shape[2], **contract.fixed_dims}
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for spec in contract.inputs:
        size = spec.concrete(dims)
        if spec.dtype == "int64":
            tensors.append(torch.full(size, num_timesteps - 1, dtype=torch.int64))
        else:
            tensors.append(torch.rand(size, generator=generator))
    return tuple(t.to(device) for t in tensors)


def compile_package(module: torch.nn.Module, contract: GraphContract, args: tuple[torch.Tensor, ...],
                    dynamic: bool, inductor_configs: dict[str, Any], path: Path) -> tuple[str, ...]:
    """torch.export ``module`` (dynamic axes as the contract's, H and W as 8 * Dim) and compile it
    into the package ``path`` (a name ending in .pt2). Returns the project ops it calls at run time."""
    from export.onnx_export import dynamic_shapes

    with warnings.catch_warnings(), torch.no_grad():
        # torch's own deprecations inside export and inductor (pytree, prims); none concern the graph.
        warnings.filterwarnings("ignore", category=FutureWarning)
        program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes(contract) if dynamic else None,
                                      strict=False)
        torch._inductor.aoti_compile_and_package(program, package_path=str(path),
                                                 inductor_configs=dict(inductor_configs))
    # The packaged ops (engines.kernels.support.PACKAGED_SUFFIX) are compiled in; the others run
    # through AOTInductor's proxy executor, their Python needed where the package runs.
    ops = {node.target._schema.name for node in program.graph.nodes
           if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
           and node.target.namespace == "hidiff" and not node.target._schema.name.endswith(kernel_support.PACKAGED_SUFFIX)}
    return tuple(sorted(ops))


def _check_shapes(shapes: Sequence[Sequence[int]]) -> list[Shape]:
    checked = []
    for shape in shapes:
        if len(shape) != 3 or any(int(s) < 1 for s in shape) or any(int(s) % IMAGE_MULTIPLE for s in shape[1:]):
            raise ValueError(f"package shape {tuple(shape)}: expected (batch, height, width) with batch >= 1 and "
                             f"height and width multiples of {IMAGE_MULTIPLE} (pad the frame size up)")
        checked.append((int(shape[0]), int(shape[1]), int(shape[2])))
    return checked


def build_aoti_packages(model: "HIDiff", out_dir: str | Path, device: str | int | torch.device = "cpu",
                        precision: Precision | str | None = None, shapes: Sequence[Sequence[int]] = (),
                        fuse_kernels: bool = False, force: bool = False, dry_run: bool = False,
                        log: Callable[[str], None] | None = None, progress: bool = False) -> list[PackageResult]:
    """Write ``out_dir/GRAPH.DEVICE-PRECISION[.BxHxW].pt2`` and their manifests; see the module
    docstring. ``precision`` defaults to FP16 on CUDA and FP32 on the CPU; ``shapes`` are (batch,
    height, width) sizes that get a package of their own (image graphs only; padded sizes, multiples
    of 8); ``force`` rebuilds what would be reused; ``dry_run`` only says what would be built and why
    (status "out of date"); ``progress`` shows the time spent on each package while it compiles.
    Returns one :class:`PackageResult` per package."""
    target = parse_device(device)
    if precision is None:
        precision = Precision.FP16 if target.type == "cuda" else Precision.FP32
    precision = Precision.parse(precision)
    jobs: list[tuple[str, Shape | None]] = [(name, None) for name in GRAPH_NAMES]
    jobs += [(name, shape) for shape in _check_shapes(shapes) for name in IMAGE_GRAPHS]
    options = build_options(target, precision, fuse_kernels)
    out = Path(out_dir)
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
    modules = prepared_modules(model, target, precision, options)
    digest = source_sha256(model, modules.values())
    facts = target_facts(target)
    contracts = graph_contracts(model.config.prior_tokens, model.config.prior_channels)
    model_entry = {"config": model.config.to_dict(), "prior_tokens": model.config.prior_tokens,
                   "prior_channels": model.config.prior_channels}
    results = []
    for graph, shape in jobs:
        contract = contracts[graph]
        path = out / package_name(graph, target.type, precision, shape)
        ranges = dynamic_ranges(contract) if shape is None else {}
        expected = PackageRequirements(graph=graph, device=target.type, precision=precision.value, target=facts,
                                       source_sha256=digest, options=options, shape=shape, dynamic=ranges,
                                       check_shape=True)
        reason = "forced" if force else needs_rebuild(path, expected)
        if reason is None:
            results.append(PackageResult(graph, path, "reused"))
            if log is not None:
                log(results[-1].line())
            continue
        if reason.startswith("missing package"):
            reason = ""
        if dry_run:
            results.append(PackageResult(graph, path, "out of date", reason or "missing"))
            continue
        start = time.perf_counter()
        args = _example_inputs(contract, model.schedule.num_timesteps, shape, target)
        work = Path(tempfile.mkdtemp(prefix=".aoti-build-", dir=out))
        try:
            built = work / "model.pt2"
            with Heartbeat(f"compiling {path.name}", enabled=progress):
                ops = compile_package(modules[graph], contract, args, shape is None, options["inductor"], built)
            manifest = PackageManifest.describe(
                built, graph=graph, device=target.type, precision=precision.value, shape=shape, dynamic=ranges,
                source_sha256=digest, options=options, target=facts, contract=contract.as_dict(),
                model=model_entry, custom_ops=ops)
            manifest_path(path).unlink(missing_ok=True)  # an interrupted build then leaves no stale manifest
            os.replace(built, path)
            manifest.write(manifest_path(path))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results.append(PackageResult(graph, path, "built", reason, time.perf_counter() - start))
        if log is not None:
            log(results[-1].line())
    return results


def build_machine_packages(model: "HIDiff", out_dir: str | Path, precision: Precision | str = Precision.FP16,
                           shapes: Sequence[Sequence[int]] = (), force: bool = False,
                           log: Callable[[str], None] | None = None, progress: bool = True) -> list[PackageResult]:
    """What ``export/build_engines.py`` writes: CPU FP32 packages everywhere and, where torch sees a
    CUDA GPU, CUDA packages in ``precision`` (with a package per shape in ``shapes``) with the fused
    Triton kernels compiled in wherever they run (:func:`cuda_kernels_reason`); ``progress`` shows the
    time spent on each package while it compiles."""
    results = build_aoti_packages(model, out_dir, "cpu", Precision.FP32, force=force, log=log, progress=progress)
    if torch.cuda.is_available():
        precision = Precision.parse(precision)
        reason = cuda_kernels_reason(precision)
        if reason is not None and log is not None:
            log(f"CUDA packages without the fused kernels: {reason}")
        results += build_aoti_packages(model, out_dir, "cuda", precision, shapes=shapes, fuse_kernels=reason is None,
                                       force=force, log=log, progress=progress)
    return results


def cuda_kernels_reason(precision: Precision) -> str | None:
    """Why CUDA packages in ``precision`` cannot have the fused kernels compiled in: None when they
    can (Triton is installed and the precision is FP16; see engines.kernels.support)."""
    dtype = torch.float16 if precision is Precision.FP16 else torch.float32
    return kernel_support.unavailable_reason(torch.device("cuda"), dtype, channels_last=True)
