"""AOTInductor backend: the three graphs as ahead-of-time compiled packages (``.pt2``).

A package is what ``torch.export`` + ``torch._inductor.aoti_compile_and_package`` make of one
graph module (:mod:`export.aoti_package` builds them): machine code for one device type and
precision, weights inside, loaded in about a second with no compilation. Files, in one folder::

    le_dm.cpu-fp32.pt2            one graph, dynamic batch, height and width (multiples of 8)
    le_dm.cpu-fp32.pt2.json       its manifest (PackageManifest)
    restormer.cuda-fp16.1x720x1280.pt2   a package for one shape (tuned for it), beside the dynamic one

A package only runs where it was built for: the same torch, device type and precision, on CUDA the
same GPU model, on the CPU the same architecture and no wider vector instructions. The manifest
says so, and :func:`check_package` refuses a foreign, stale or corrupt file by name
(:class:`CorruptPackage`, :class:`PackageMismatch`) before anything is loaded.

:class:`AotiEngine` runs a graph: the package built for the call's shape if there is one, else the
dynamic package. On CUDA each shape is replayed as a CUDA graph (:class:`engines.cuda_graphs.ShapeGraphs`;
the packages are loaded with ``run_single_threaded=True``, which makes them capturable); on the
CPU the package runs plainly. :func:`aoti_engines` opens the three graphs of a folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import json
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from engines.artifacts import (
    ArtifactError,
    ArtifactMismatch,
    JsonManifest,
    contract_from_dict,
    sha256_file,
)
from engines.base import Engine, EngineError, caller_stream, parse_device
from engines.contracts import GRAPH_NAMES, GraphContract, Precision
from engines.cuda_graphs import ShapeGraphs

FORMAT = "hidiff-deploy/aoti-package/1"
SUFFIX = ".pt2"
MANIFEST_SUFFIX = ".json"
ZIP_MAGIC = b"PK\x03\x04"  # a .pt2 is a zip archive
# Modules that register the project's custom ops (the fused Triton kernels), imported before a
# package that calls one of them through AOTInductor's proxy executor is loaded.
KERNEL_MODULES = ("engines.kernels.gated_dwconv", "engines.kernels.norm_matmul", "engines.kernels.prior_attention",
                  "engines.kernels.head_gram", "engines.kernels.gdfn_block", "engines.kernels.mdta_block")
# Vector instruction sets of the CPU, narrowest first: a package compiled for one runs on the wider ones.
CPU_CAPABILITIES = ("DEFAULT", "AVX2", "AVX512")

Shape = tuple[int, int, int]  # (batch, height, width) of a package built for one shape


def package_name(graph: str, device_type: str, precision: Precision | str, shape: Shape | None = None) -> str:
    """``restormer.cuda-fp16.pt2`` (dynamic) or ``restormer.cuda-fp16.1x720x1280.pt2`` (one shape)."""
    size = "" if shape is None else "." + "x".join(str(int(s)) for s in shape)
    return f"{graph}.{device_type}-{Precision.parse(precision).value}{size}{SUFFIX}"


def manifest_path(package: str | Path) -> Path:
    """``NAME.pt2`` -> ``NAME.pt2.json``."""
    package = Path(package)
    return package.with_name(package.name + MANIFEST_SUFFIX)


def package_files(folder: str | Path, device_type: str | None = None) -> list[Path]:
    """The packages in ``folder`` (for one device type: ``"cpu"`` or ``"cuda"``), sorted."""
    pattern = f"*.{device_type}-*{SUFFIX}" if device_type else f"*{SUFFIX}"
    return sorted(p for p in Path(folder).glob(pattern) if not p.name.startswith("."))


def target_facts(device: torch.device) -> dict[str, Any]:
    """What a package compiled here depends on: library versions and the processor it runs on."""
    facts: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                             "cuda": torch.version.cuda, "device": device.type}
    try:
        import triton

        facts["triton"] = triton.__version__
    except ImportError:
        facts["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(gpu_name=props.name, compute_capability=[props.major, props.minor])
    else:
        facts.update(machine=platform.machine(), cpu_capability=torch.backends.cpu.get_cpu_capability())
    return facts


# ------------------------------------------------------------------------------------------ manifest


@dataclass(frozen=True)
class PackageManifest(JsonManifest):
    """Everything one package was built from and for; written as ``NAME.pt2.json`` beside it."""

    graph: str
    device: str  # "cpu" or "cuda"
    precision: str
    shape: Shape | None  # the one (B, H, W) of a per-shape package; None for the dynamic package
    dynamic: dict[str, list[int]]  # {"batch": [lo, hi], "height": [lo, hi], ...} of the dynamic axes
    source_sha256: str  # the model's weights, configuration and graph code
    options: dict[str, Any]  # how the graphs were prepared and compiled (layout, fused kernels, inductor)
    target: dict[str, Any]  # target_facts() where it was built
    package_sha256: str
    package_size: int
    contract: dict[str, Any]  # GraphContract.as_dict()
    model: dict[str, Any]  # {"config": HIDiffConfig.to_dict(), "prior_tokens": N, "prior_channels": C'}
    custom_ops: tuple[str, ...] = ()  # project ops the package calls through the proxy executor
    created: str = ""
    format: str = FORMAT

    @classmethod
    def describe(cls, package: Path, **fields: Any) -> "PackageManifest":
        """The manifest of the package file ``package``: hash and size are computed here."""
        fields.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        return cls(package_sha256=sha256_file(package), package_size=package.stat().st_size, **fields)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape) if self.shape is not None else None
        d["custom_ops"] = list(self.custom_ops)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PackageManifest":
        """Strict: an unknown format or a missing or malformed field raises ValueError."""
        if d.get("format") != FORMAT:
            raise ValueError(f"manifest format {d.get('format')!r}, this code reads {FORMAT!r}")
        try:
            shape = d["shape"]
            return cls(
                graph=str(d["graph"]), device=str(d["device"]), precision=str(d["precision"]),
                shape=None if shape is None else (int(shape[0]), int(shape[1]), int(shape[2])),
                dynamic={str(k): [int(v) for v in r] for k, r in d["dynamic"].items()},
                source_sha256=str(d["source_sha256"]), options=dict(d["options"]), target=dict(d["target"]),
                package_sha256=str(d["package_sha256"]), package_size=int(d["package_size"]),
                contract=dict(d["contract"]), model=dict(d["model"]),
                custom_ops=tuple(str(op) for op in d["custom_ops"]), created=str(d["created"]),
            )
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
            raise ValueError(f"manifest field missing or malformed: {exc!r}") from exc

    def covers(self, dims: Mapping[str, int]) -> bool:
        """Whether this package runs inputs with these symbolic dimensions (batch, height, width)."""
        if self.shape is not None:
            return tuple(dims.get(k, -1) for k in ("batch", "height", "width")) == self.shape
        return all(lo <= dims[axis] <= hi for axis, (lo, hi) in self.dynamic.items() if axis in dims)


@dataclass(frozen=True)
class PackageRequirements:
    """What the caller needs a package to be; ``None`` fields are not checked. The runtime knows
    its device, torch and precision; the builder also knows the model, options and shape."""

    graph: str | None = None
    device: str | None = None
    precision: str | None = None
    target: dict[str, Any] | None = None  # target_facts() of this machine
    source_sha256: str | None = None
    options: dict[str, Any] | None = None
    shape: Shape | None = None
    dynamic: dict[str, list[int]] | None = None
    check_shape: bool = False  # compare shape (None is a value here: the dynamic package)


class PackageError(ArtifactError):
    """A package cannot be used; ``reason`` names why in a few words, ``path`` is the package."""


class CorruptPackage(PackageError):
    """The package or its manifest is missing, damaged, or not an AOTInductor package at all."""


class PackageMismatch(PackageError, ArtifactMismatch):
    """The package is intact but built for something else; ``reasons`` and ``details`` list each."""

    def __init__(self, path: Path, mismatches: list[tuple[str, str]]):
        ArtifactMismatch.__init__(self, path, mismatches, "AOTInductor package",
                                  "Rebuild it with python export/build_engines.py on this machine")


def _read_manifest(path: Path) -> PackageManifest:
    json_path = manifest_path(path)
    if not json_path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
        if head != ZIP_MAGIC:
            raise CorruptPackage(path, "foreign", f"{path} is not an AOTInductor package (a .pt2 is a zip archive; "
                                                  f"its first bytes are {head.hex()})")
        raise CorruptPackage(path, "missing manifest",
                             f"AOTInductor package {path} has no manifest {json_path.name}: it was not written by "
                             "export/build_engines.py or its build was interrupted. Rebuild it.")
    try:
        return PackageManifest.read(json_path)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise CorruptPackage(path, "unreadable manifest",
                             f"manifest {json_path} of package {path} cannot be read ({exc}). Rebuild the package.") from exc


def _check_bytes(path: Path, manifest: PackageManifest) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
    if head != ZIP_MAGIC:
        raise CorruptPackage(path, "foreign", f"{path} is not the package its manifest describes (first bytes "
                                              f"{head.hex()}, a .pt2 starts with {ZIP_MAGIC.hex()}): another file "
                                              "was written over it. Rebuild it.")
    if size != manifest.package_size:
        reason = "truncated" if size < manifest.package_size else "corrupt"
        raise CorruptPackage(path, reason, f"AOTInductor package {path} is {reason}: {size} bytes, "
                                           f"{manifest.package_size} at build time. Copy it again or rebuild it.")
    digest = sha256_file(path)
    if digest != manifest.package_sha256:
        raise CorruptPackage(path, "corrupt", f"AOTInductor package {path} is corrupt: sha256 {digest}, "
                                              f"{manifest.package_sha256} at build time. Copy it again or rebuild it.")


def _target_mismatches(have: Mapping[str, Any], want: Mapping[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def differs(reason: str, key: str) -> None:
        if have.get(key) != want.get(key):
            found.append((reason, f"{key} {have.get(key)!r} in the package, {want.get(key)!r} here"))

    differs("another device", "device")
    differs("another torch version", "torch")
    if want.get("device") == "cuda":
        differs("another GPU", "gpu_name")
        differs("another GPU", "compute_capability")
    else:
        differs("another CPU", "machine")
        built, here = have.get("cpu_capability"), want.get("cpu_capability")
        if built != here and not (built in CPU_CAPABILITIES and here in CPU_CAPABILITIES
                                  and CPU_CAPABILITIES.index(built) <= CPU_CAPABILITIES.index(here)):
            found.append(("another CPU", f"vector instructions {built!r} in the package, {here!r} here"))
    return found


def _mismatches(m: PackageManifest, want: PackageRequirements) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def differs(reason: str, label: str, have: Any, expected: Any) -> None:
        if expected is not None and have != expected:
            found.append((reason, f"{label} {have!r} in the package, {expected!r} expected"))

    differs("another graph", "graph", m.graph, want.graph)
    differs("another device", "device", m.device, want.device)
    differs("precision changed", "precision", m.precision, want.precision)
    if want.target is not None:
        found += _target_mismatches(m.target, want.target)
    differs("source graph changed", "source sha256", m.source_sha256, want.source_sha256)
    differs("options changed", "options", m.options, want.options)
    if want.check_shape and m.shape != want.shape:
        found.append(("shape changed", f"shape {m.shape!r} in the package, {want.shape!r} expected"))
    differs("shape changed", "dynamic ranges", m.dynamic, want.dynamic)
    return found


def check_package(path: str | Path, expected: PackageRequirements) -> PackageManifest:
    """The manifest of an intact package that fits ``expected``; else :class:`CorruptPackage` or
    :class:`PackageMismatch`. Reads the file once to hash it; loads nothing."""
    path = Path(path)
    if not path.is_file():
        raise CorruptPackage(path, "missing package", f"AOTInductor package {path} does not exist; build it with "
                                                      "python export/build_engines.py")
    manifest = _read_manifest(path)
    _check_bytes(path, manifest)
    mismatches = _mismatches(manifest, expected)
    if mismatches:
        raise PackageMismatch(path, mismatches)
    return manifest


def needs_rebuild(path: str | Path, expected: PackageRequirements) -> str | None:
    """``None`` if the package can be reused, else why not (``"source graph changed: ..."``)."""
    try:
        check_package(path, expected)
    except PackageMismatch as exc:
        return "; ".join(f"{r}: {d}" for r, d in zip(exc.reasons, exc.details))
    except CorruptPackage as exc:
        return f"{exc.reason}: {exc}"
    return None


# ------------------------------------------------------------------------------------------ engine


def _ensure_custom_ops(path: Path, ops: Iterable[str]) -> None:
    """Import the modules that register ``ops`` (``"hidiff::name"``); refuse if one is still missing."""
    def registered(op: str) -> bool:
        namespace, name = op.split("::", 1)
        return hasattr(getattr(torch.ops, namespace), name)

    missing = [op for op in ops if not registered(op)]
    if not missing:
        return
    for module in KERNEL_MODULES:  # each registers its ops where Triton is installed
        importlib.import_module(module)
    missing = [op for op in missing if not registered(op)]
    if missing:
        raise PackageMismatch(path, [("custom ops missing", f"the package calls {missing}, which no module of "
                                                             f"{list(KERNEL_MODULES)} registers")])


class PackageRunner:
    """A loaded package called with its graph's input tensors, in order; returns what the graph
    returns (a tensor or a tuple of tensors). Built on torch's package loader alone: importing
    ``torch._inductor`` for its wrapper (``aoti_load_package``) costs seconds of a process's start."""

    def __init__(self, loader: Any):
        self.loader = loader
        self._out_spec = pytree.treespec_loads(loader.get_call_spec()[1])

    def __call__(self, *tensors: torch.Tensor) -> Any:
        return pytree.tree_unflatten(self.loader.boxed_run(list(tensors)), self._out_spec)


def load_runner(path: Path, device: torch.device) -> Any:
    """The loaded package: a callable ``runner(*tensors)``. On CUDA it runs single-threaded (no
    locks or stream synchronisation of its own), which is what lets a CUDA graph capture it."""
    single = device.type == "cuda"
    index = device.index if device.type == "cuda" and device.index is not None else -1
    try:
        # aoti_load_package first compares the package's CPU instruction set with this machine's by
        # compiling probe programs with g++: seconds in every new inductor cache folder
        # (pytorch#191715). The manifest check has compared the machine already, so the loader is
        # built directly, with the arguments aoti_load_package passes it.
        return PackageRunner(torch._C._aoti.AOTIModelPackageLoader(str(path), "model", single, 1, index))
    except (AttributeError, TypeError):  # another torch's loader: the public path
        load = torch._inductor.aoti_load_package
        if "run_single_threaded" in inspect.signature(load).parameters:
            return load(str(path), run_single_threaded=single, device_index=index)
        return load(str(path))


class AotiEngine(Engine):
    """One graph from its packages (``{path: manifest}``, checked): a per-shape package for the
    shapes it was built for, the dynamic package for the rest. ``cuda_graphs`` (CUDA only, default
    on) replays each shape's work as a CUDA graph."""

    backend = "aoti"

    def __init__(self, packages: Mapping[Path, PackageManifest], device: str | int | torch.device = "cpu",
                 cuda_graphs: bool | None = None):
        if not packages:
            raise ValueError("AotiEngine needs at least one package")
        manifests = list(packages.values())
        super().__init__(_contract(manifests[0]))
        self._device = parse_device(device)
        self.packages = dict(packages)
        self.manifest = next((m for m in manifests if m.shape is None), manifests[0])
        self._runners: dict[Path, Any] = {}
        self._closed = False
        for path, m in self.packages.items():
            _ensure_custom_ops(path, m.custom_ops)
        # The dynamic package is loaded now, so that a package that cannot load fails at open time.
        for path, m in self.packages.items():
            if m.shape is None:
                self._runner(path)
        if cuda_graphs is None:
            cuda_graphs = self._device.type == "cuda"
        self._graphs = ShapeGraphs(self._run, self._device, f"graph {self.contract.name!r}") if cuda_graphs else None

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def cuda_graph_error(self) -> str | None:
        """Why this engine runs plainly: None while its CUDA graphs are in use."""
        return "not asked for (cuda_graphs=False)" if self._graphs is None else self._graphs.error

    @property
    def profiles(self) -> list[dict[str, tuple[tuple[int, ...], ...]]]:
        """The dynamic package's ranges as ``{input: (min, opt, max)}`` shapes, TensorRT's form:
        the runtime tiles frames beyond them and caps its batches."""
        low = {**self.contract.fixed_dims, **{axis: r[0] for axis, r in self.manifest.dynamic.items()}}
        high = {**self.contract.fixed_dims, **{axis: r[1] for axis, r in self.manifest.dynamic.items()}}
        return [{spec.name: (spec.concrete(low), spec.concrete(low), spec.concrete(high))
                 for spec in self.contract.inputs if spec.dynamic_axes}]

    def package_for(self, dims: Mapping[str, int]) -> Path:
        """The package that runs these dimensions: one built for exactly them, else the dynamic one."""
        fitting = [(m.shape is None, path) for path, m in self.packages.items() if m.covers(dims)]
        if not fitting:
            built = "; ".join(f"{p.name}: " + (f"shape {m.shape}" if m.shape else f"ranges {m.dynamic}")
                              for p, m in self.packages.items())
            raise EngineError(f"graph {self.contract.name!r}: no package runs {dict(dims)} ({built}); rebuild the "
                              "packages with a wider range, or tile the frame (Deblurrer max_pixels)")
        return min(fitting)[1]  # a per-shape package (False) before the dynamic one (True)

    def _runner(self, path: Path) -> Any:
        if path not in self._runners:
            try:
                self._runners[path] = load_runner(path, self._device)
            except RuntimeError as exc:
                raise EngineError(f"graph {self.contract.name!r}: AOTInductor package {path} failed to load "
                                  f"({exc}); rebuild it with python export/build_engines.py") from exc
        return self._runners[path]

    def _run(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dims = {"batch": int(args[0].shape[0])}
        if self.contract.is_image_graph:
            dims.update(height=int(args[0].shape[2]), width=int(args[0].shape[3]))
        result = self._runner(self.package_for(dims))(*args)
        return (result,) if isinstance(result, torch.Tensor) else tuple(result)

    def _infer(self, feeds: dict[str, torch.Tensor], dims: dict[str, int], stream: Any) -> dict[str, torch.Tensor]:
        if self._closed:
            raise EngineError(f"graph {self.contract.name!r}: the AOTInductor engine was closed; open a new one")
        self.package_for(dims)  # a shape no package runs is refused before any work
        # The packages were compiled for contiguous inputs: their kernels index with those strides.
        args = [feeds[name].contiguous() for name in self.contract.input_names]
        s = caller_stream(stream, self._device)
        with torch.cuda.stream(s) if s is not None else contextlib.nullcontext():
            outputs = self._graphs(*args) if self._graphs is not None else self._run(*args)
        if len(outputs) != len(self.contract.outputs):
            raise EngineError(f"graph {self.contract.name!r}: the package returned {len(outputs)} tensors, "
                              f"the contract names {list(self.contract.output_names)}")
        return dict(zip(self.contract.output_names, outputs))

    def close(self) -> None:
        self._runners.clear()
        self._graphs = None
        self._closed = True

    def __repr__(self) -> str:
        shapes = sorted(m.shape for m in self.packages.values() if m.shape is not None)
        return (f"AotiEngine(graph={self.contract.name!r}, device={self._device}, precision={self.manifest.precision!r}, "
                f"shapes={shapes}, dynamic={self.manifest.dynamic})")


def _contract(manifest: PackageManifest) -> GraphContract:
    return contract_from_dict(manifest.contract)


def default_precision(folder: str | Path, device: str | torch.device) -> Precision:
    """The precision of the folder's packages for ``device``: FP16 on CUDA where such packages
    exist, else FP32."""
    kind = torch.device(device).type
    fp16 = any(p.name.split(".")[1] == f"{kind}-fp16" for p in package_files(folder, kind))
    return Precision.FP16 if fp16 else Precision.FP32


def aoti_engines(folder: str | Path, device: str | int | torch.device = "cpu",
                 precision: Precision | str | None = None, cuda_graphs: bool | None = None) -> dict[str, Engine]:
    """The three graphs from the packages in ``folder`` for ``device`` and ``precision`` (default:
    :func:`default_precision`). Every package is checked first (:func:`check_package`); the three
    graphs must come from one model and one build. Returns ``{"le_dm", "denoise_step", "restormer"}``
    -> :class:`AotiEngine`."""
    folder = Path(folder)
    target = parse_device(device)
    precision = default_precision(folder, target) if precision is None else Precision.parse(precision)
    here = target_facts(target)
    found: dict[str, dict[Path, PackageManifest]] = {name: {} for name in GRAPH_NAMES}
    for path in package_files(folder, target.type):
        graph = path.name.split(".")[0]
        if graph not in found or path.name.split(".")[1] != f"{target.type}-{precision.value}":
            continue
        found[graph][path] = check_package(path, PackageRequirements(graph=graph, device=target.type,
                                                                     precision=precision.value, target=here))
    missing = [name for name, packages in found.items() if not any(m.shape is None for m in packages.values())]
    if missing:
        raise FileNotFoundError(f"{folder} holds no dynamic {target.type} {precision.value} AOTInductor package for "
                                f"{missing} (expected {[package_name(n, target.type, precision) for n in missing]}); "
                                "build them with python export/build_engines.py")
    sources = {(m.source_sha256, json.dumps(m.options, sort_keys=True)): p
               for packages in found.values() for p, m in packages.items()}
    if len(sources) > 1:
        paths = sorted(str(p.name) for p in sources.values())
        raise PackageMismatch(next(iter(sources.values())), [(
            "mixed sources", f"the packages {paths} were built from different models or options; rebuild the folder")])
    engines: dict[str, Engine] = {}
    try:
        for name in GRAPH_NAMES:
            engines[name] = AotiEngine(found[name], target, cuda_graphs=cuda_graphs)
    except BaseException:
        for engine in engines.values():
            engine.close()
        raise
    return engines


__all__ = ["AotiEngine", "CorruptPackage", "PackageError", "PackageManifest", "PackageMismatch",
           "PackageRequirements", "PackageRunner", "aoti_engines", "check_package", "default_precision", "load_runner",
           "manifest_path", "needs_rebuild", "package_files", "package_name", "target_facts"]
