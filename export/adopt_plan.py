"""Adopt a TensorRT plan built elsewhere (``trtexec``) so that the runtime accepts it.

    python -m export.adopt_plan PLAN [PLAN ...] [--graph NAME] [--onnx DIR] [--precision fp16]
                                [--dla-core N] [--out DIR] [--force]
    hidiff-adopt-plan ...                                                   (the same)

The runtime refuses a plan without its manifest (``NAME.plan.json``, :mod:`engines.plan`),
because TensorRT answers a plan from another version or GPU with a bare ``None``. A plan that
``trtexec`` built (the lines ``hidiff-build-engines`` prints where the Python bindings are
missing, or a Jetson user's own, with ``--useDLACore``) has none. This command:

1. opens the plan with the TensorRT runtime on this machine's GPU (so it is known to load here);
2. checks its I/O against the graph's contract (:mod:`engines.contracts`): names, input/output
   modes, dtypes, ranks and fixed dimensions; the contract comes from the ONNX export's manifest
   (``--onnx DIR``) or, without it, from the plan's own fixed prior dimensions (N, C');
3. checks every optimization profile: each dynamic input has one, batch and image sides agree
   across inputs, fixed dimensions match, and the image sides are at least 8;
4. writes ``NAME.plan.json`` beside ``DIR/NAME.plan`` (``--out DIR`` copies the plan there first)
   with this TensorRT version and GPU, the profiles read from the plan, the precision (the
   export's, or ``--precision``) and, with ``--onnx``, the ONNX file's hash.

Exit status: 0 adopted, 1 the plan does not fit the contract or cannot be deserialized here,
2 bad input (a missing file, an unknown graph, a manifest that exists without --force),
3 TensorRT or a GPU is missing here.
"""
from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from engines.artifacts import write_atomic
from engines.base import BackendUnavailable
from engines.contracts import GRAPH_NAMES, GraphContract, Precision, ShapeProfile, TensorSpec, graph_contracts
from engines.cuda import DeviceInfo
from engines.plan import PlanManifest, PlanRequirements, check_plan, manifest_path, plan_path_for
from engines.version import project_version, version_text

if TYPE_CHECKING:
    import tensorrt as trt_types

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT, EXIT_NO_TENSORRT = 0, 1, 2, 3
PROG = "hidiff-adopt-plan"
# The tensor of each graph whose fixed dimensions are the prior's (N, C').
PRIOR_TENSOR = {"le_dm": "cond", "denoise_step": "z", "restormer": "prior"}
UNKNOWN_ONNX = "unknown: adopted without --onnx"
UNKNOWN_OPT_LEVEL = -1  # trtexec does not record its --builderOptimizationLevel in the plan

Shape = tuple[int, ...]


class PlanRejected(ValueError):
    """The plan does not fit the graph's contract; the message lists every problem."""


class BadInput(ValueError):
    """A command-line problem the user fixes (exit 2)."""


@dataclass(frozen=True)
class Adopted:
    plan: Path
    manifest: PlanManifest


def _dims(dims: Any) -> Shape:
    return tuple(int(d) for d in dims)


def _mode(engine: "trt_types.ICudaEngine", name: str) -> str:
    return str(getattr(engine.get_tensor_mode(name), "name", engine.get_tensor_mode(name))).upper()


def contract_from_plan(engine: "trt_types.ICudaEngine", graph: str) -> GraphContract:
    """The contract of ``graph`` for the prior shape (N, C') the plan has fixed."""
    name = PRIOR_TENSOR[graph]
    names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    if name not in names:
        raise PlanRejected(f"the plan has no tensor {name!r} (it has {sorted(names)}): it is not a {graph!r} plan")
    shape = _dims(engine.get_tensor_shape(name))
    if len(shape) != 3 or shape[1] < 1 or shape[2] < 1:
        raise PlanRejected(f"{name!r} has shape {shape} in the plan; a {graph!r} plan has (batch, N, C') with N and "
                           "C' fixed")
    return graph_contracts(shape[1], shape[2])[graph]


def io_problems(trt: ModuleType, engine: "trt_types.ICudaEngine", contract: GraphContract) -> list[str]:
    """Everything about the plan's I/O tensors that differs from ``contract``."""
    from engines.tensorrt_backend import dtype_name

    io = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    expected = set(contract.input_names) | set(contract.output_names)
    if io != expected:
        return [f"I/O tensors {sorted(io)}, {sorted(expected)} expected (missing {sorted(expected - io)}, "
                f"unexpected {sorted(io - expected)})"]
    problems = []
    for spec in contract.inputs + contract.outputs:
        want = "INPUT" if spec.name in contract.input_names else "OUTPUT"
        if _mode(engine, spec.name) != want:
            problems.append(f"{spec.name!r} is an {_mode(engine, spec.name).lower()}, {want.lower()} expected")
        dtype = dtype_name(engine.get_tensor_dtype(spec.name))
        if dtype != spec.dtype:
            problems.append(f"{spec.name!r} is {dtype}, {spec.dtype} expected")
        problems += _shape_problems(spec, _dims(engine.get_tensor_shape(spec.name)), "in the plan")
    return problems


def _shape_problems(spec: TensorSpec, shape: Shape, where: str) -> list[str]:
    """A plan shape (-1 for dynamic) against the contract's: rank and every fixed dimension."""
    if len(shape) != len(spec.shape):
        return [f"{spec.name!r} has shape {shape} {where}, {spec.shape} expected"]
    for have, want in zip(shape, spec.shape):
        if isinstance(want, int) and have >= 0 and have != want:
            return [f"{spec.name!r} has shape {shape} {where}, {spec.shape} expected"]
    return []


def read_profiles(engine: "trt_types.ICudaEngine", contract: GraphContract) -> tuple[list[ShapeProfile], list[str]]:
    """The plan's optimization profiles as image-size profiles, and every problem with them.

    Image graphs: (batch, height, width) of the image input at min/opt/max. Graphs without an
    image input cover every image size: their profiles carry the batch range and the export's
    full side range (8 .. 8192).
    """
    from export.onnx_export import MAX_SIDE

    dynamic = [s for s in contract.inputs if -1 in _dims(engine.get_tensor_shape(s.name))]
    count = int(engine.num_optimization_profiles)
    problems: list[str] = []
    profiles: list[ShapeProfile] = []
    if dynamic and count < 1:
        return [], [f"dynamic inputs {[s.name for s in dynamic]} but no optimization profile"]
    for index in range(count):
        dims: list[dict[str, int]] = [{}, {}, {}]  # symbolic dimension -> value, for min, opt, max
        for spec in dynamic:
            shapes = [_dims(s) for s in engine.get_tensor_profile_shape(spec.name, index)]
            for which, shape in enumerate(shapes):
                label = ("min", "opt", "max")[which]
                found = _shape_problems(spec, shape, f"at profile {index} {label}")
                if found:
                    problems += found
                    continue
                for symbol, value in zip(spec.shape, shape):
                    if not isinstance(symbol, str):
                        continue
                    seen = dims[which].setdefault(symbol, value)
                    if seen != value:
                        problems.append(f"profile {index} {label}: {symbol} is {seen} for one input and {value} for "
                                        f"{spec.name!r}; the graph's inputs share it")
        if problems:
            continue
        try:
            if contract.is_image_graph:
                lo, opt, hi = ((d["batch"], d["height"], d["width"]) for d in dims)
                profiles.append(ShapeProfile(lo, opt, hi))
            else:
                b_lo, b_opt, b_hi = (d.get("batch", 1) for d in dims)
                profiles.append(ShapeProfile((b_lo, 8, 8), (b_opt, 8, 8), (b_hi, MAX_SIDE, MAX_SIDE)))
        except (KeyError, ValueError) as exc:
            problems.append(f"profile {index}: {exc}")
    return profiles, problems


def _deserialize(trt: ModuleType, plan: bytes, path: Path, dla_core: int | None) -> "trt_types.ICudaEngine":
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    if dla_core is not None:
        runtime.DLA_core = dla_core
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise PlanRejected(f"TensorRT {getattr(trt, '__version__', '?')} cannot deserialize {path}: it was built by "
                           "another TensorRT version or for another GPU, or it is not a plan (TensorRT's messages "
                           "above say which). Build it again on this machine.")
    return engine


def adopt_plan(plan_path: str | Path, graph: str | None = None, *, onnx_dir: str | Path | None = None,
               precision: str | None = None, dla_core: int | None = None, out_dir: str | Path | None = None,
               force: bool = False, trt: ModuleType | None = None, gpu: DeviceInfo | None = None) -> Adopted:
    """Check ``plan_path`` against ``graph``'s contract and write its manifest.

    ``graph`` defaults to the file name (``restormer.plan``). ``onnx_dir``: the export the plan
    was built from (contract, precision and ONNX hash from its manifest). ``precision``: what the
    graphs compute in (required without ``onnx_dir``). ``out_dir``: copy the plan there as
    ``GRAPH.plan``. ``trt`` / ``gpu``: the TensorRT module and the GPU (default: imported and
    queried here). Raises BadInput, PlanRejected, or BackendUnavailable (no TensorRT or GPU).
    """
    from engines.artifacts import ExportManifest
    from engines.cuda import device_properties
    from engines.tensorrt_backend import import_tensorrt, trt_version

    source = Path(plan_path)
    if not source.is_file():
        raise BadInput(f"plan {source} does not exist")
    graph = graph or source.name.split(".")[0]
    if graph not in GRAPH_NAMES:
        raise BadInput(f"{source}: graph {graph!r} is not one of {', '.join(GRAPH_NAMES)}; name it with --graph")
    target = plan_path_for(out_dir, graph) if out_dir is not None else source
    if target.name != f"{graph}.plan":
        raise BadInput(f"the runtime looks for {graph}.plan, the plan is {target.name}: pass --out DIR to copy it "
                       f"there as {graph}.plan")
    if manifest_path(target).exists() and not force:
        raise BadInput(f"{manifest_path(target)} exists already; pass --force to replace it")
    contract = None
    onnx_sha = UNKNOWN_ONNX
    if onnx_dir is not None:
        try:
            export = ExportManifest.read(onnx_dir)
            [onnx_graph] = export.select([graph])
        except (FileNotFoundError, ValueError) as exc:
            raise BadInput(str(exc)) from exc
        contract, onnx_sha = onnx_graph.contract, onnx_graph.sha256
        precision = precision or export.precision.value
    if dla_core is not None and dla_core < 0:
        raise BadInput(f"DLA core {dla_core}: DLA cores are numbered from 0")
    if precision is None:
        raise BadInput("--precision is needed without --onnx: the precision the graphs compute in (fp16 or fp32)")
    try:
        precision = Precision.parse(precision).value
    except ValueError as exc:
        raise BadInput(str(exc)) from exc

    if trt is None:
        trt, _ = import_tensorrt("tensorrt")
    gpu = gpu if gpu is not None else device_properties(0)
    data = source.read_bytes()
    engine = _deserialize(trt, data, source, dla_core)
    contract = contract or contract_from_plan(engine, graph)
    problems = io_problems(trt, engine, contract)
    profiles, profile_problems = read_profiles(engine, contract) if not problems else ([], [])
    problems += profile_problems
    if problems:
        raise PlanRejected(f"{source} does not fit graph {graph!r}: " + "; ".join(problems))

    manifest = PlanManifest.describe(
        data, graph=graph, precision=precision, flavour="tensorrt", trt_version=trt_version(trt),
        gpu_name=gpu.name, compute_capability=gpu.compute_capability, profiles=tuple(profiles),
        onnx_sha256=onnx_sha, opt_level=UNKNOWN_OPT_LEVEL,
        versions={"tensorrt": trt_version(trt), "python": platform.python_version(),
                  "adopted by": f"hidiff-deploy {project_version()} (export.adopt_plan)"},
        contract=contract.as_dict(), dla_core=dla_core,
    )
    if target != source:
        write_atomic(target, data)
    manifest.write(manifest_path(target))
    # What the runtime will check before it deserializes the plan.
    check_plan(target, PlanRequirements(graph=graph, flavour="tensorrt", trt_version=trt_version(trt),
                                        gpu_name=gpu.name, compute_capability=gpu.compute_capability,
                                        precision=precision))
    return Adopted(target, manifest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Check a trtexec-built TensorRT plan against the graph "
                                                            "contracts and write the manifest the runtime needs.")
    parser.add_argument("--version", action="version", version=version_text(PROG))
    parser.add_argument("plans", type=Path, nargs="+", metavar="PLAN", help="GRAPH.plan files built by trtexec")
    parser.add_argument("--graph", choices=GRAPH_NAMES, help="the graph of a single PLAN (default: its file name)")
    parser.add_argument("--onnx", type=Path, help="the ONNX export the plans were built from (its manifest.json)")
    parser.add_argument("--precision", choices=[p.value for p in Precision],
                        help="what the graphs compute in (default: the export's; needed without --onnx)")
    parser.add_argument("--dla-core", type=int, default=None, metavar="N",
                        help="the DLA core trtexec built for (--useDLACore=N); the runtime runs the plan there")
    parser.add_argument("--out", type=Path, help="copy each plan to OUT/GRAPH.plan and write the manifest there")
    parser.add_argument("--force", action="store_true", help="replace an existing manifest")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.graph is not None and len(args.plans) > 1:
        print("error: --graph names the graph of a single PLAN; name the files GRAPH.plan instead", file=sys.stderr)
        return EXIT_BAD_INPUT
    status = EXIT_OK
    for plan in args.plans:
        try:
            adopted = adopt_plan(plan, args.graph, onnx_dir=args.onnx, precision=args.precision,
                                 dla_core=args.dla_core, out_dir=args.out, force=args.force)
        except BadInput as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except BackendUnavailable as exc:
            print(f"error: {plan}: TensorRT and a GPU are needed to open the plan: {exc}", file=sys.stderr)
            return EXIT_NO_TENSORRT
        except PlanRejected as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = EXIT_MISMATCH
            continue
        m = adopted.manifest
        ranges = ", ".join(f"{p.min}..{p.max} (opt {p.opt})" for p in m.profiles)
        print(f"{adopted.plan}: adopted as {m.graph} ({m.precision}, TensorRT {m.trt_version}, {m.gpu_name}"
              f"{f', DLA core {m.dla_core}' if m.dla_core is not None else ''}); profiles {ranges}; wrote "
              f"{manifest_path(adopted.plan).name}")
    return status


if __name__ == "__main__":
    sys.exit(main())
