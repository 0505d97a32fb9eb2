"""Build TensorRT plans from the exported ONNX graphs: ``onnx_dir/NAME.onnx`` -> ``out_dir/NAME.plan``.

One code path for TensorRT 10.x, 11.x and TensorRT-RTX 1.x (``flavour``):

1. read ``onnx_dir/manifest.json`` (written by the export) and check each ONNX file's sha256;
2. reuse a plan whose manifest still matches (graph, ONNX hash, precision, profiles, TensorRT
   version, GPU); otherwise say why and rebuild;
3. strongly typed network (precision comes from the ONNX graph's own types; never
   ``BuilderFlag.FP16``, which 11.x removed), ``OnnxParser.parse_from_file`` with every parser
   error reported, one optimization profile per :class:`ShapeProfile`, the builder optimization
   level, the workspace limit, the timing cache loaded from and saved back to disk, progress
   while it builds, and TensorRT's log kept in ``out_dir/build.log``;
4. with ``dla_core``: the DLA as default device with GPU fallback (layers the DLA cannot run,
   attention among them, stay on the GPU); the core is recorded in the manifest;
5. write plan and manifest atomically.

Without TensorRT (or, for TensorRT proper, without a GPU) nothing is built and nothing is
written: the report says "not built" with the reason, and :func:`trtexec_commands` gives the
equivalent ``trtexec`` lines to run where TensorRT is. TensorRT-RTX builds ahead of time on the
CPU, so its plans are portable across the GPUs it supports (not Hopper, see engines.plan).
"""
from __future__ import annotations

import importlib.metadata
import platform
import re
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from engines.artifacts import ExportManifest, GraphEntry, write_atomic
from engines.base import BackendUnavailable, EngineError
from engines.contracts import GRAPH_NAMES, GraphContract, ShapeProfile
from engines.cuda import DeviceInfo, device_properties
from engines.plan import PlanManifest, PlanRequirements, manifest_path, needs_rebuild, plan_path_for
from engines.tensorrt_backend import import_tensorrt, trt_version
from export.progress import Heartbeat

if TYPE_CHECKING:
    import tensorrt as trt_types

DEFAULT_PROFILE = ShapeProfile()  # batch 1..4, 256x256 .. 1080x1920, tuned for 720x1280
TIMING_CACHE_NAME = "timing.cache"
BUILD_LOG_NAME = "build.log"
TRTEXEC_NOTE = ("--stronglyTyped is required on TensorRT 10.x (precision comes from the ONNX types) "
                "and a documented no-op on 11.x, where every network is strongly typed")

Shape = tuple[int, ...]
InputRanges = dict[str, tuple[Shape, Shape, Shape]]  # input -> (min, opt, max) of one TensorRT profile
Log = Callable[[str], None]


# ----------------------------------------------------------------------------- profiles


_DIMS = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*$")


def parse_profile(text: str) -> ShapeProfile:
    """``"1x256x256:1x720x1280:4x1080x1920"`` (BxHxW for min:opt:max) -> ShapeProfile.

    A single ``"BxHxW"`` means a static profile (min = opt = max), what CUDA graphs want.
    """
    parts = text.split(":")
    if len(parts) not in (1, 3):
        raise ValueError(f"profile {text!r}: expected BxHxW:BxHxW:BxHxW (min:opt:max) or one BxHxW")
    shapes = []
    for part in parts:
        match = _DIMS.match(part)
        if match is None:
            raise ValueError(f"profile {text!r}: {part!r} is not BxHxW (batch x height x width, e.g. 1x720x1280)")
        shapes.append((int(match[1]), int(match[2]), int(match[3])))
    lo, opt, hi = shapes if len(shapes) == 3 else shapes * 3
    return ShapeProfile(lo, opt, hi)  # validates min <= opt <= max and the minimum sizes


def input_profiles(contract: GraphContract, profiles: Sequence[ShapeProfile]) -> list[InputRanges]:
    """The TensorRT optimization profiles of one graph: ``[{input: (min, opt, max)}]``.

    Image inputs get (batch, 3, H, W) ranges with H, W padded up to multiples of 8; prior inputs
    get (batch, N, C') from the same profile's batch range; static inputs (``t``) get none.
    Graphs without image inputs can get identical profiles from different image profiles; those
    are kept once.
    """
    result: list[InputRanges] = []
    for profile in profiles:
        ranges = dict(contract.profile_shapes(profile.padded()))
        if ranges not in result:
            result.append(ranges)
    return result


# ----------------------------------------------------------------------------- trtexec equivalent


def _shape_spec(ranges: InputRanges, which: int) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in shapes[which])}" for name, shapes in ranges.items())


def trtexec_commands(onnx_dir: str | Path, out_dir: str | Path, profiles: Sequence[ShapeProfile] = (DEFAULT_PROFILE,),
                     *, graphs: Sequence[str] = GRAPH_NAMES, opt_level: int = 3, workspace_gib: float | None = None,
                     timing_cache: str | Path | None = None, dla_core: int | None = None) -> list[str]:
    """The ``trtexec`` command line that builds each graph's plan as :func:`build_engines` would.

    Each profile is one ``--minShapes/--optShapes/--maxShapes`` group (repeated groups give
    several optimization profiles). ``--stronglyTyped``: see :data:`TRTEXEC_NOTE`. The plan gets
    no manifest this way, so the runtime refuses it until ``python -m export.adopt_plan`` has
    checked and described it; use these lines to build where the Python bindings are missing.
    """
    export = ExportManifest.read(onnx_dir)
    cache = Path(timing_cache) if timing_cache is not None else Path(out_dir) / TIMING_CACHE_NAME
    lines = []
    for graph in export.select(graphs):
        parts = ["trtexec", f"--onnx={graph.path}", f"--saveEngine={plan_path_for(out_dir, graph.name)}"]
        for ranges in input_profiles(graph.contract, profiles):
            parts += [f"--minShapes={_shape_spec(ranges, 0)}", f"--optShapes={_shape_spec(ranges, 1)}",
                      f"--maxShapes={_shape_spec(ranges, 2)}"]
        parts += ["--stronglyTyped", f"--builderOptimizationLevel={opt_level}"]
        if workspace_gib is not None:
            parts.append(f"--memPoolSize=workspace:{int(workspace_gib * 1024)}")  # MiB
        if dla_core is not None:
            parts += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
        parts += [f"--timingCacheFile={cache}", "--skipInference"]
        lines.append(shlex.join(parts))
    return lines


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True)
class GraphResult:
    graph: str
    status: str  # "built", "reused", "not built" or "failed"
    reason: str = ""
    plan: Path | None = None
    seconds: float = 0.0

    def __str__(self) -> str:
        timing = f" in {self.seconds:.0f} s" if self.status == "built" else ""
        return f"{self.graph}: {self.status}{timing}" + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class BuildReport:
    out_dir: Path
    flavour: str | None
    trt_version: str | None
    results: tuple[GraphResult, ...]

    @property
    def ok(self) -> bool:
        """Every requested graph has a usable plan (built now or reused)."""
        return all(r.status in ("built", "reused") for r in self.results)

    def lines(self) -> list[str]:
        return [str(r) for r in self.results]


def _not_built(out_dir: Path, graphs: Sequence[str], reason: str, trt: ModuleType | None = None,
               flavour: str | None = None) -> BuildReport:
    return BuildReport(out_dir, flavour, trt_version(trt) if trt is not None else None,
                       tuple(GraphResult(g, "not built", reason) for g in graphs))


# ----------------------------------------------------------------------------- TensorRT helpers


class BuildFailed(RuntimeError):
    """TensorRT could not build one graph; the message says why."""


class DlaUnavailable(RuntimeError):
    """TensorRT or a GPU is missing, so whether the device has DLA cores cannot be asked."""


class DlaRefused(ValueError):
    """The requested DLA core does not exist on this device (none do on a discrete GPU)."""


@dataclass(frozen=True)
class DlaCores:
    device: str  # the GPU's name
    count: int  # TensorRT's builder.num_DLA_cores


def dla_cores(flavour: str = "auto") -> DlaCores:
    """How many DLA cores TensorRT sees on GPU 0 (0 on every discrete GPU, 2 on an AGX Orin).

    Raises DlaUnavailable when TensorRT or a GPU is missing."""
    try:
        trt, _ = import_tensorrt(flavour)
        gpu = device_properties(0)
    except BackendUnavailable as exc:
        raise DlaUnavailable(str(exc)) from exc
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    return DlaCores(gpu.name, int(getattr(builder, "num_DLA_cores", 0)))


def _check_dla_core(trt: ModuleType, logger: Any, dla_core: int, precision: str, gpu: DeviceInfo | None) -> None:
    """DlaRefused unless ``dla_core`` exists here and the graphs are FP16 (the DLA computes FP16 or
    INT8, and a strongly typed build takes its precision from the graphs)."""
    if precision != "fp16":
        raise DlaRefused(f"DLA core {dla_core} requested for {precision} graphs: the DLA runs FP16 and INT8 only; "
                         "export the graphs with --precision fp16")
    count = int(getattr(trt.Builder(logger), "num_DLA_cores", 0))
    if dla_core >= count:
        device = gpu.name if gpu is not None else "this device"
        have = "no DLA cores" if count == 0 else f"DLA cores 0..{count - 1} only"
        raise DlaRefused(f"DLA core {dla_core} requested, but {device} has {have} (builder.num_DLA_cores = {count}); "
                         "DLA exists on Jetson AGX Orin and Orin NX (2 cores) and Orin Nano (1)")


def _make_logger(trt: ModuleType, log_file: TextIO, echo: Log) -> Any:
    """A TensorRT logger that keeps INFO and worse in build.log and echoes warnings and errors."""
    lock = threading.Lock()  # TensorRT may log from its own threads
    warning, info = int(trt.ILogger.Severity.WARNING), int(trt.ILogger.Severity.INFO)

    class BuildLogger(trt.ILogger):  # type: ignore[name-defined]  # the module is chosen at run time
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            if hasattr(self, "min_severity"):
                self.min_severity = trt.ILogger.Severity.INFO

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) > info:  # VERBOSE would make build.log hundreds of megabytes
                return
            label = getattr(severity, "name", str(severity))
            with lock:
                log_file.write(f"[{label}] {msg}\n")
            if int(severity) <= warning:
                echo(f"  TensorRT {label.lower()}: {msg}")

    return BuildLogger()


def _make_progress(trt: ModuleType, graph: str) -> Any | None:
    """TensorRT's IProgressMonitor as nested tqdm bars (one per build phase), where it exists."""
    if not hasattr(trt, "IProgressMonitor"):
        return None
    lock = threading.Lock()

    class Progress(trt.IProgressMonitor):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, tqdm] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with lock:
                depth = len(self.bars)
                self.bars[phase_name] = tqdm(total=num_steps, desc=f"{graph}: {phase_name}", position=depth,
                                             leave=False, dynamic_ncols=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with lock:
                bar = self.bars.get(phase_name)
                if bar is not None:
                    bar.update(1)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with lock:
                bar = self.bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return Progress()


class _TimingCache:
    """The timing cache file, shared by every graph of one build and saved after each plan."""

    def __init__(self, path: Path, log: Log):
        self.path, self.log = path, log
        self.data = path.read_bytes() if path.is_file() else b""
        self.cache: Any = None

    def attach(self, config: "trt_types.IBuilderConfig") -> None:
        if self.cache is None:
            try:
                self.cache = config.create_timing_cache(self.data)
            except (RuntimeError, TypeError, ValueError) as exc:
                self.log(f"timing cache {self.path} unreadable ({exc}); starting a new one")
            if self.cache is None:
                self.cache = config.create_timing_cache(b"")
        if not config.set_timing_cache(self.cache, ignore_mismatch=False):
            # Saved by another GPU or TensorRT version: a fresh cache costs time, a failed build costs more.
            self.log(f"timing cache {self.path} was made on another GPU or TensorRT version; starting a new one")
            self.cache = config.create_timing_cache(b"")
            config.set_timing_cache(self.cache, ignore_mismatch=False)

    def save(self, config: "trt_types.IBuilderConfig") -> None:
        write_atomic(self.path, bytes(memoryview(config.get_timing_cache().serialize())))


def _network_flags(trt: ModuleType) -> int:
    # Strongly typed: required on 10.x for precision from the ONNX types, ignored on 11.x (always on).
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _build_plan(trt: ModuleType, logger: Any, graph: GraphEntry, profiles: Sequence[ShapeProfile], *,
                opt_level: int, workspace_gib: float | None, timing: _TimingCache | None,
                dla_core: int | None = None) -> bytes:
    """Parse one ONNX file and build its serialized plan; BuildFailed says why it could not."""
    builder: trt_types.Builder = trt.Builder(logger)
    network: trt_types.INetworkDefinition = builder.create_network(_network_flags(trt))
    parser: trt_types.OnnxParser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph.path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildFailed(f"the ONNX parser rejected {graph.path} ({len(errors)} errors): " + " | ".join(errors))
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    if names != set(graph.contract.input_names):
        raise BuildFailed(f"{graph.path} has inputs {sorted(names)}, the contract of {graph.name!r} "
                          f"expects {sorted(graph.contract.input_names)}; export it again")

    config: trt_types.IBuilderConfig = builder.create_builder_config()
    if workspace_gib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = opt_level
    if hasattr(trt, "ProfilingVerbosity"):  # layer precisions and tactics for the engine inspector
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if dla_core is not None:
        # What trtexec's --useDLACore=N --allowGPUFallback sets. No precision flag: the strongly
        # typed network's FP16 tensors are what the DLA runs.
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    for ranges in input_profiles(graph.contract, profiles):
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in ranges.items():
            profile.set_shape(name, trt.Dims(lo), trt.Dims(opt), trt.Dims(hi))
        if config.add_optimization_profile(profile) < 0:
            raise BuildFailed(f"TensorRT rejected the optimization profile {ranges} of {graph.name!r}")
    if timing is not None:
        timing.attach(config)

    progress = _make_progress(trt, graph.name)
    if progress is not None and hasattr(config, "progress_monitor"):
        config.progress_monitor = progress
        plan = builder.build_serialized_network(network, config)
    else:
        with Heartbeat(f"{graph.name}: building"):
            plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildFailed(f"TensorRT could not build {graph.name!r}; see the errors above and build.log")
    if timing is not None:
        timing.save(config)
    return bytes(memoryview(plan))


def _library_versions(trt: ModuleType, flavour: str) -> dict[str, str]:
    versions = {flavour: trt_version(trt), "python": platform.python_version()}
    for dist in ("cuda-bindings", "onnx", "torch"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


# ----------------------------------------------------------------------------- the build


def build_engines(onnx_dir: str | Path, out_dir: str | Path, profiles: Sequence[ShapeProfile] = (DEFAULT_PROFILE,),
                  *, graphs: Sequence[str] = GRAPH_NAMES, opt_level: int = 3, workspace_gib: float | None = None,
                  timing_cache: str | Path | None = None, flavour: str = "auto", force: bool = False,
                  dla_core: int | None = None, log: Log = print) -> BuildReport:
    """Build (or reuse) ``out_dir/NAME.plan`` + ``NAME.plan.json`` for each graph of the export.

    ``profiles``: image-size profiles, one TensorRT optimization profile each (sides rounded up
    to multiples of 8). ``workspace_gib``: TensorRT's workspace pool limit (default TensorRT's).
    ``timing_cache``: file to load and update, default ``out_dir/timing.cache`` (TensorRT-RTX
    ignores timing caches). ``flavour``: "auto", "tensorrt" or "tensorrt_rtx". ``force`` rebuilds
    plans that still match. ``dla_core``: build for that DLA core with GPU fallback (fp16
    exports only; :class:`DlaRefused` where the core does not exist). Raises for a bad export
    folder or bad arguments; a missing TensorRT or GPU gives a report of "not built" graphs
    instead, with nothing written.
    """
    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    export = ExportManifest.read(onnx_dir)
    selected = export.select(graphs)
    profiles = tuple(profiles)
    if not profiles:
        raise ValueError("build_engines needs at least one ShapeProfile")
    if not 0 <= opt_level <= 5:
        raise ValueError(f"opt_level {opt_level}: TensorRT's builder optimization levels are 0..5")
    if workspace_gib is not None and not workspace_gib > 0:
        raise ValueError(f"workspace_gib {workspace_gib}: the workspace limit must be more than 0 GiB")
    padded = tuple(p.padded() for p in profiles)
    if padded != profiles:
        log(f"profiles rounded up to multiples of 8: {[p.as_dict() for p in padded]}")

    try:
        trt, flavour_name = import_tensorrt(flavour)
    except BackendUnavailable as exc:
        return _not_built(out_dir, graphs, str(exc))
    gpu: DeviceInfo | None = None
    try:
        gpu = device_properties(0)
    except BackendUnavailable as exc:
        if flavour_name == "tensorrt":  # TensorRT tunes kernels on the GPU it builds for
            return _not_built(out_dir, graphs, f"no CUDA GPU to build on ({exc})", trt, flavour_name)
    version = trt_version(trt)
    log(f"{flavour_name} {version}" + (f" on {gpu.name} (sm_{gpu.compute_capability[0]}{gpu.compute_capability[1]})"
                                       if gpu else " without a GPU (ahead-of-time build)"))
    if dla_core is not None:
        if flavour_name != "tensorrt":
            raise DlaRefused(f"DLA core {dla_core} requested: {flavour_name} has no DLA support")
        _check_dla_core(trt, trt.Logger(trt.Logger.WARNING), dla_core, export.precision, gpu)

    out_dir.mkdir(parents=True, exist_ok=True)
    timing: _TimingCache | None = None
    if flavour_name == "tensorrt":
        timing = _TimingCache(Path(timing_cache) if timing_cache is not None else out_dir / TIMING_CACHE_NAME, log)
    else:  # TensorRT-RTX 1.x: a timing cache has no effect on the plan and forces a GPU query
        log("TensorRT-RTX: no timing cache (it does not affect TensorRT-RTX plans)")

    results = []
    with open(out_dir / BUILD_LOG_NAME, "a", encoding="utf-8") as log_file:
        log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {flavour_name} {version} "
                       f"{gpu.name if gpu else 'no GPU'} ===\n")
        logger = _make_logger(trt, log_file, log)
        for graph in selected:
            result = _build_one(trt, flavour_name, logger, export, graph, padded, out_dir, gpu,
                                opt_level=opt_level, workspace_gib=workspace_gib, timing=timing, force=force,
                                dla_core=dla_core, log=log)
            log(str(result))
            log_file.write(f"--- {result}\n")
            results.append(result)
    return BuildReport(out_dir, flavour_name, version, tuple(results))


def _dla_mismatch(plan_path: Path, dla_core: int | None) -> str | None:
    """Why a plan that matches everything else was built for another device (GPU or DLA core)."""
    have = PlanManifest.read(manifest_path(plan_path)).dla_core
    if have == dla_core:
        return None

    def name(core: int | None) -> str:
        return "the GPU" if core is None else f"DLA core {core}"
    return f"device changed: built for {name(have)}, {name(dla_core)} requested"


def _build_one(trt: ModuleType, flavour: str, logger: Any, export: ExportManifest, graph: GraphEntry,
               profiles: tuple[ShapeProfile, ...], out_dir: Path, gpu: DeviceInfo | None, *, opt_level: int,
               workspace_gib: float | None, timing: _TimingCache | None, force: bool, log: Log,
               dla_core: int | None = None) -> GraphResult:
    plan_path = plan_path_for(out_dir, graph.name)
    try:
        export.verified_file(graph.name)
    except (FileNotFoundError, EngineError) as exc:
        return GraphResult(graph.name, "failed", str(exc))
    onnx_sha, precision = graph.sha256, export.precision.value
    # A TensorRT plan belongs to the GPU it was tuned on; a TensorRT-RTX plan is compiled ahead of
    # time for all the GPUs it supports, whatever GPU (if any) the build machine has.
    build_gpu = gpu if flavour == "tensorrt" else None
    expected = PlanRequirements(
        graph=graph.name, flavour=flavour, trt_version=trt_version(trt),
        gpu_name=build_gpu.name if build_gpu else None,
        compute_capability=build_gpu.compute_capability if build_gpu else None,
        precision=precision, profiles=profiles, onnx_sha256=onnx_sha,
    )
    existed = plan_path.exists()
    reason = "forced" if force else needs_rebuild(plan_path, expected)
    if reason is None:
        reason = _dla_mismatch(plan_path, dla_core)
    if reason is None:
        return GraphResult(graph.name, "reused", plan=plan_path)
    log(f"{graph.name}: building ({reason})")
    start = time.perf_counter()
    try:
        plan = _build_plan(trt, logger, graph, profiles, opt_level=opt_level, workspace_gib=workspace_gib,
                           timing=timing, dla_core=dla_core)
    except BuildFailed as exc:
        return GraphResult(graph.name, "failed", str(exc), seconds=time.perf_counter() - start)
    manifest = PlanManifest.describe(
        plan, graph=graph.name, precision=precision, flavour=flavour, trt_version=trt_version(trt),
        gpu_name=gpu.name if gpu else None, compute_capability=gpu.compute_capability if gpu else None,
        profiles=profiles, onnx_sha256=onnx_sha, opt_level=opt_level, versions=_library_versions(trt, flavour),
        contract=graph.contract.as_dict(), dla_core=dla_core,
    )
    # Plan first, manifest last: a crash in between leaves a manifest that no longer matches the
    # plan's hash, which the next build (and the runtime) reports as corrupt rather than trusting.
    write_atomic(plan_path, plan)
    manifest.write(manifest_path(plan_path))
    return GraphResult(graph.name, "built", reason if existed else "", plan_path, time.perf_counter() - start)
