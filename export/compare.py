"""Polygraphy's accuracy comparison of the exported graphs, run after the engine build.

For every graph and every TensorRT optimization profile of the build (the profiles'
``{input: (min, opt, max)}`` ranges from :func:`export.trt_build.input_profiles`), one input at
the profile's optimum shape runs through two Polygraphy runners, and
``Comparator.compare_accuracy`` compares their outputs:

- ONNX Runtime (CPU) against TensorRT (``TrtRunner`` on that optimization profile) where the
  graph's plan was built or reused by TensorRT and TensorRT and a GPU are here;
- ONNX Runtime against the PyTorch graph (``hidiff.graphs.graph_modules`` in float32 on the CPU)
  otherwise. Polygraphy has no PyTorch runner; :class:`TorchRunner` is a small ``BaseRunner``.

Bounds on the largest absolute difference: against PyTorch, those of :mod:`export.verify`
(1e-4 for fp32 graphs; 1e-2 x max(1, max|ONNX Runtime output|) for fp16 graphs). Against
TensorRT, 1e-2 x max(1, max|output|) in both precisions: TensorRT runs FP32 convolutions and
matrix products in TF32 (a 10-bit mantissa, as FP16's) unless told otherwise.

Use it through ``hidiff-build-engines`` (step 5), which writes :meth:`ComparisonReport.as_dict`
into ``export_report.json`` under ``"comparisons"``.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.contracts import IMAGE_MULTIPLE, GraphContract, Precision, ShapeProfile
from engines.plan import PlanManifest, manifest_path

if TYPE_CHECKING:
    from hidiff.model import HIDiff

ONNXRUNTIME, TENSORRT, PYTORCH = "onnxruntime", "tensorrt", "pytorch"
TRT_RELATIVE_TOLERANCE = 1e-2  # times max(1, max|output|), both precisions (TF32 in TensorRT's FP32)
REPORT_KEY = "comparisons"
Log = Callable[[str], None]


@dataclass(frozen=True)
class GraphComparison:
    """One graph at one profile's optimum shape: Polygraphy's statistics per output, or why not."""

    graph: str
    profile: int
    inputs: dict[str, list[int]]  # the shapes fed
    runners: tuple[str, str]
    tolerance: float  # bound on the largest absolute difference
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> max/mean abs, max rel
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.skipped) or all(o["max_abs"] <= self.tolerance for o in self.outputs.values())

    def __str__(self) -> str:
        shapes = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in self.inputs.items())
        where = f"{self.graph} profile {self.profile} ({shapes}): {self.runners[0]} vs {self.runners[1]}"
        if self.skipped:
            return f"{where}: skipped ({self.skipped})"
        worst = max(o["max_abs"] for o in self.outputs.values())
        return f"{where}: max abs diff {worst:.3g} (tolerance {self.tolerance:.3g}) {'ok' if self.ok else 'DRIFT'}"

    def as_dict(self) -> dict[str, Any]:
        return {"graph": self.graph, "profile": self.profile, "inputs": self.inputs, "runners": list(self.runners),
                "tolerance": self.tolerance, "outputs": self.outputs, "skipped": self.skipped, "ok": self.ok}


@dataclass(frozen=True)
class ComparisonReport:
    precision: str
    comparisons: tuple[GraphComparison, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)

    def lines(self) -> list[str]:
        return [str(c) for c in self.comparisons]

    def as_dict(self) -> dict[str, Any]:
        return {"tool": "polygraphy Comparator.compare_accuracy", "precision": self.precision,
                "statistic": "largest absolute difference of each output", "ok": self.ok,
                "graphs": [c.as_dict() for c in self.comparisons]}


# ----------------------------------------------------------------------------- runners


def _torch_runner_class() -> type:
    """TorchRunner, defined on first use so that importing this module needs no Polygraphy."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    class TorchRunner(BaseRunner):
        """A PyTorch graph module (one output) as a Polygraphy runner, on the CPU in float32."""

        def __init__(self, module: Any, contract: GraphContract, name: str = PYTORCH):
            super().__init__(name=name)
            self.module, self.contract = module, contract

        def get_input_metadata_impl(self) -> Any:
            meta = TensorMetadata()
            for spec in self.contract.inputs:
                meta.add(spec.name, np.dtype(spec.dtype), [d if isinstance(d, int) else None for d in spec.shape])
            return meta

        def infer_impl(self, feed_dict: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
            import torch

            start = time.perf_counter()
            with torch.no_grad():
                out = self.module(*(torch.from_numpy(np.asarray(feed_dict[n])) for n in self.contract.input_names))
            self.inference_time = time.perf_counter() - start
            return OrderedDict([(self.contract.outputs[0].name, out.detach().cpu().numpy())])

    return TorchRunner


def torch_runner(module: Any, contract: GraphContract, name: str = PYTORCH) -> Any:
    """A Polygraphy runner over a graph module of ``hidiff.graphs.graph_modules``."""
    return _torch_runner_class()(module, contract, name)


def onnxruntime_runner(onnx_path: Path, name: str = ONNXRUNTIME) -> Any:
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    return OnnxrtRunner(SessionFromOnnx(str(onnx_path), providers=["CPUExecutionProvider"]), name=name)


def tensorrt_runner(plan_path: Path, profile: int, name: str = TENSORRT) -> Any:
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return TrtRunner(EngineFromBytes(BytesFromPath(str(plan_path))), name=name, optimization_profile=profile)


# ----------------------------------------------------------------------------- one comparison


def compare_runners(first: Any, second: Any, feeds: Mapping[str, np.ndarray],
                    tolerance: Callable[[Mapping[str, np.ndarray]], float]) -> tuple[float, dict[str, dict[str, float]]]:
    """Run ``feeds`` through both runners (Comparator.run) and compare the outputs
    (Comparator.compare_accuracy, largest absolute difference against ``tolerance(first's outputs)``).
    Returns the bound applied and, per output, max/mean absolute and max relative difference."""
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.ERROR):  # Polygraphy's INFO lines would drown the build's own
        results = Comparator.run([first, second], data_loader=[dict(feeds)])
        bound = tolerance(results[first.name][0])
        # rtol 0: an output passes only when its largest absolute difference is within the bound.
        accuracy = Comparator.compare_accuracy(results, compare_func=_simple_compare(atol=bound, rtol=0.0,
                                                                                    check_error_stat="max"))
    # Polygraphy 0.53 returns one AccuracyResult per compare function, earlier versions just one.
    single = accuracy if hasattr(accuracy, "keys") else accuracy[0]
    per_output = single[(first.name, second.name)][0]
    stats = {name: {"max_abs": float(r.max_absdiff), "mean_abs": float(r.mean_absdiff),
                    "max_rel": float(r.max_reldiff)} for name, r in per_output.items()}
    return bound, stats


def _simple_compare(**options: Any) -> Any:
    """Polygraphy's simple comparison: SimpleCompareFunc since 0.53, CompareFunc.simple before."""
    try:
        from polygraphy.comparator import SimpleCompareFunc
    except ImportError:
        from polygraphy.comparator import CompareFunc

        return CompareFunc.simple(**options)
    return SimpleCompareFunc(**options)


def _opt_feeds(contract: GraphContract, ranges: Mapping[str, tuple[tuple[int, ...], ...]], num_timesteps: int,
               seed: int) -> dict[str, np.ndarray]:
    """Inputs of ``contract`` at the optimum shape of one profile's ranges."""
    from export.verify import sample_feeds

    dims: dict[str, int] = {}
    for spec in contract.inputs:
        if spec.name in ranges:
            dims.update({d: v for d, v in zip(spec.shape, ranges[spec.name][1]) if isinstance(d, str)})
    return sample_feeds(contract, dims.get("batch", 1), dims.get("height", IMAGE_MULTIPLE),
                        dims.get("width", IMAGE_MULTIPLE), num_timesteps, seed)


def _relative_bound(relative: float) -> Callable[[Mapping[str, np.ndarray]], float]:
    def bound(outputs: Mapping[str, np.ndarray]) -> float:
        largest = max(float(np.max(np.abs(np.asarray(v, dtype=np.float64)))) for v in outputs.values())
        return relative * max(1.0, largest)
    return bound


def _pytorch_bound(precision: Precision) -> Callable[[Mapping[str, np.ndarray]], float]:
    from export.verify import FP16_TOLERANCE, FP32_TOLERANCE

    if precision is Precision.FP32:
        return lambda outputs: FP32_TOLERANCE
    return _relative_bound(FP16_TOLERANCE)


def _tensorrt_plans(plans: Mapping[str, Path | None], log: Log) -> tuple[dict[str, Path], str]:
    """The plans TensorRT's TrtRunner can run here, and why none can (empty when some can)."""
    from engines.base import BackendUnavailable
    from engines.cuda import device_properties
    from engines.tensorrt_backend import import_tensorrt

    usable = {}
    for graph, plan in plans.items():
        if plan is None:
            continue
        flavour = PlanManifest.read(manifest_path(plan)).flavour
        if flavour == "tensorrt":
            usable[graph] = plan
        else:
            log(f"{graph}: Polygraphy's TrtRunner runs TensorRT, not {flavour}: compared with PyTorch instead")
    if not usable:
        return {}, "no TensorRT plan was built or reused"
    try:
        import_tensorrt("tensorrt")
        device_properties(0)
    except BackendUnavailable as exc:
        return {}, str(exc)
    return usable, ""


def compare_export(onnx_dir: str | Path, model: "HIDiff", profiles: Sequence[ShapeProfile], *,
                   plans: Mapping[str, Path | None] | None = None, log: Log = print) -> ComparisonReport:
    """Compare every graph of the export in ``onnx_dir`` at each profile's optimum shape.

    ``plans``: {graph: plan path} of the plans built or reused (ONNX Runtime is compared with
    TensorRT for those, with ``model``'s PyTorch graphs for the others). ``profiles``: the
    build's image-size profiles. ONNX Runtime errors on a graph (no CPU kernel for a float16
    node) skip that graph with the reason; everything else raises.
    """
    import copy

    import torch

    from engines.artifacts import ExportManifest
    from export.trt_build import input_profiles
    from hidiff.graphs import graph_modules

    export = ExportManifest.read(onnx_dir)
    precision = export.precision
    steps = model.schedule.num_timesteps
    trt_plans, why_not = _tensorrt_plans(plans or {}, log)
    if why_not and plans:
        log(f"TensorRT not compared ({why_not}): ONNX Runtime against the PyTorch graphs instead")
    reference = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    modules = graph_modules(reference, torch.float32)
    comparisons = []
    for name, graph in export.graphs.items():
        use_trt = name in trt_plans
        runners = (ONNXRUNTIME, TENSORRT if use_trt else PYTORCH)
        for index, ranges in enumerate(input_profiles(graph.contract, profiles)):
            feeds = _opt_feeds(graph.contract, ranges, steps, seed=index)
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            second = (tensorrt_runner(trt_plans[name], index) if use_trt
                      else torch_runner(modules[name], graph.contract))
            bound_of = _relative_bound(TRT_RELATIVE_TOLERANCE) if use_trt else _pytorch_bound(precision)
            try:
                bound, stats = compare_runners(onnxruntime_runner(graph.path), second, feeds, bound_of)
            except Exception as exc:  # ONNX Runtime raises its own exception types (Fail, NotImplemented, ...)
                text = " ".join(str(exc).split())[:300]
                if precision is Precision.FP16 and ("NOT_IMPLEMENTED" in text or "Could not find an implementation"
                                                    in text):
                    comparisons.append(GraphComparison(name, index, shapes, runners, 0.0, skipped=(
                        f"ONNX Runtime's CPU provider cannot run this float16 graph ({text})")))
                    continue
                raise
            comparisons.append(GraphComparison(name, index, shapes, runners, bound, stats))
            log(str(comparisons[-1]))
    return ComparisonReport(precision.value, tuple(comparisons))


def write_to_report(onnx_dir: str | Path, report: ComparisonReport) -> Path:
    """Put ``report`` into ``onnx_dir/export_report.json`` under ``"comparisons"`` (atomically)."""
    from engines.artifacts import write_atomic
    from export.manifest import REPORT_NAME

    path = Path(onnx_dir) / REPORT_NAME
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data[REPORT_KEY] = report.as_dict()
    write_atomic(path, json.dumps(data, indent=2) + "\n")
    return path
