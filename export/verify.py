"""Numeric verification of exported graphs: ONNX Runtime (CPU) against PyTorch in float32.

Each graph runs as an :class:`~engines.onnxruntime_backend.OnnxRuntimeEngine` at shapes the export
never saw (sides where H/16 is not an integer, a batch of 2) and is compared with
``graph_modules(model, torch.float32)``; then the three engines run the runtime's own inference
chain (:class:`engines.pipeline.Pipeline`: padding, the T steps, cropping) and are compared with
``HIDiff(blur, noise)``. Errors are max absolute differences.

Tolerances (written here, reported in the manifest):

- fp32 graphs: :data:`FP32_TOLERANCE` = 1e-4, per graph and for the chain. ORT and PyTorch
  differ only in summation order, which costs ~1e-6 on these magnitudes.
- fp16 graphs: compared with the *float32* PyTorch model, so the error is fp16 rounding of
  weights and activations, growing with the network's depth. The bound is relative to the
  reference's largest magnitude (max|ref|, at least 1): :data:`FP16_TOLERANCE` = 1e-2 for one
  graph, :data:`FP16_CHAIN_TOLERANCE` = 2e-2 for the chain (8 float16 denoising steps feed the
  Restormer). Measured: 0.05 % of max|ref| for the GoPro-size Restormer with random weights,
  0.2 % for the tests' tiny one; the bound catches gross errors (a wrong channel order, a baked
  size, an overflow to inf) while admitting fp16's rounding.
  Where ONNX Runtime's CPU provider lacks a float16 kernel the numeric check is skipped with
  that reason; the structural checks (float32 islands) still run.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engines.base import Engine
from engines.contracts import DENOISE_STEP, IMAGE_MULTIPLE, LE_DM, RESTORMER, GraphContract, Precision, graph_contracts
from engines.pipeline import Pipeline

if TYPE_CHECKING:
    from hidiff.model import HIDiff

FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2  # times max(1, max|reference|)
FP16_CHAIN_TOLERANCE = 2e-2
# (batch, height, width): none is the export example (2 x 64 x 80); 72/16 and 136/16 are not integers.
GRAPH_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 72, 104), (1, 48, 136), (2, 40, 56))
# The chain takes any size and pads as HIDiff.forward does: 50 x 70 -> 56 x 72.
CHAIN_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 50, 70), (2, 48, 40))


class DriftError(RuntimeError):
    """An exported graph disagrees with PyTorch beyond its tolerance; the message has the numbers."""


@dataclass(frozen=True)
class Comparison:
    """One graph (or the chain) at one shape: the max abs error against PyTorch and its bound."""

    graph: str
    shape: tuple[int, int, int]  # (batch, height, width)
    max_abs_error: float
    tolerance: float  # absolute bound actually applied

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_error)) and self.max_abs_error <= self.tolerance

    def __str__(self) -> str:
        b, h, w = self.shape
        verdict = "ok" if self.ok else "DRIFT"
        return f"{self.graph} {b}x{h}x{w}: max abs error {self.max_abs_error:.3g} (tolerance {self.tolerance:.3g}) {verdict}"

    def as_dict(self) -> dict[str, Any]:
        return {"graph": self.graph, "shape": list(self.shape), "max_abs_error": self.max_abs_error,
                "tolerance": self.tolerance, "ok": self.ok}


@dataclass(frozen=True)
class Verification:
    """All comparisons of one export, or why the numeric check was skipped."""

    precision: Precision
    comparisons: tuple[Comparison, ...]
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"numeric check skipped: {self.skipped}"]
        return [str(c) for c in self.comparisons]

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision.value, "backend": "onnxruntime CPUExecutionProvider",
                "reference": "PyTorch float32 on CPU", "skipped": self.skipped,
                "comparisons": [c.as_dict() for c in self.comparisons]}


def cpu_engine(path: str | Path, contract: GraphContract, precision: Precision | str) -> Engine:
    """The graph at ``path`` as an ONNX Runtime engine on the CPU execution provider (strict: no
    fallback), checked against ``contract``."""
    from engines.onnxruntime_backend import OnnxRuntimeEngine

    # Warnings about unused initializers are noise here (severity 3: errors only).
    return OnnxRuntimeEngine(path, contract, "cpu", provider="cpu", strict=True, precision=precision,
                             session_options={"log_severity_level": 3})


def sample_feeds(contract: GraphContract, batch: int, height: int, width: int, num_timesteps: int,
                 seed: int) -> dict[str, np.ndarray]:
    """Inputs for ``contract`` at one shape: images uniform in [0, 1], priors N(0, 1), t = T-1."""
    rng = np.random.default_rng(seed)
    dims = {"batch": batch, "height": height, "width": width, **contract.fixed_dims}
    feeds: dict[str, np.ndarray] = {}
    for spec in contract.inputs:
        shape = spec.concrete(dims)
        if spec.dtype == "int64":
            # A middle step: both clamp branches and nonzero coefficients are exercised.
            feeds[spec.name] = np.full(shape, num_timesteps // 2, dtype=np.int64)
        elif spec.name == "blur":
            feeds[spec.name] = rng.random(shape, dtype=np.float32)
        else:
            feeds[spec.name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _bound(precision: Precision, reference: np.ndarray, fp16_relative: float) -> float:
    if precision is Precision.FP32:
        return FP32_TOLERANCE
    return fp16_relative * max(1.0, float(np.max(np.abs(reference))))


def compare_graph(engine: Engine, module: torch.nn.Module, precision: Precision, num_timesteps: int,
                  shapes: Sequence[tuple[int, int, int]] = GRAPH_SHAPES) -> list[Comparison]:
    """Run one graph's engine and its float32 PyTorch module at each (batch, height, width)."""
    contract = engine.contract
    results = []
    for index, (b, h, w) in enumerate(shapes):
        feeds = sample_feeds(contract, b, h, w, num_timesteps, seed=index)
        got = engine.infer_host(feeds)[contract.output_names[0]]
        with torch.no_grad():
            want = module(*(torch.from_numpy(feeds[name]) for name in contract.input_names)).numpy()
        results.append(Comparison(contract.name, (b, h, w), _max_abs(got, want), _bound(precision, want, FP16_TOLERANCE)))
    return results


def compare_chain(engines: Mapping[str, Engine], model: "HIDiff", precision: Precision,
                  shapes: Sequence[tuple[int, int, int]] = CHAIN_SHAPES) -> list[Comparison]:
    """The engines through :class:`~engines.pipeline.Pipeline` against ``model(blur, noise)``
    (float32, CPU) at each shape, with one z_T (N, C') for the whole batch as the runtime draws it."""
    results = []
    for index, (b, h, w) in enumerate(shapes):
        generator = torch.Generator().manual_seed(100 + index)
        blur = torch.rand((b, 3, h, w), generator=generator)
        noise = torch.randn(model.prior_shape, generator=generator)
        pipeline = Pipeline(engines, noise, model.schedule.num_timesteps, backend="onnxruntime", cuda_graphs=False)
        got = pipeline.run(blur).numpy()
        with torch.no_grad():
            want = model(blur, noise.expand(b, -1, -1)).numpy()
        results.append(Comparison("chain", (b, h, w), _max_abs(got, want), _bound(precision, want, FP16_CHAIN_TOLERANCE)))
    return results


def check_image_multiple() -> None:
    """Raise unless the model pads to the multiple the graphs' contracts declare (the Restormer's
    downsamplings against engines.contracts.IMAGE_MULTIPLE)."""
    from hidiff.model import MULTIPLE

    if MULTIPLE != IMAGE_MULTIPLE:
        raise DriftError(f"the model pads images to multiples of {MULTIPLE} (its Restormer's downsamplings), the "
                         f"graph contracts declare {IMAGE_MULTIPLE} (engines.contracts.IMAGE_MULTIPLE); make them agree")


def _fp16_unsupported(exc: Exception) -> str | None:
    """The reason, if ``exc`` is ONNX Runtime saying it has no CPU kernel for a float16 node."""
    text = str(exc)
    if "NOT_IMPLEMENTED" in text or "Could not find an implementation" in text:
        return f"ONNX Runtime's CPU provider cannot run this float16 graph ({text.splitlines()[0][:300]})"
    return None


def verify_graphs(paths: Mapping[str, Path], model: "HIDiff", precision: Precision | str,
                  chain: bool = True) -> Verification:
    """Compare the exported graphs at ``paths`` ({name: file}) with ``model`` in float32 on the CPU.

    Returns the comparisons; the caller decides what a drift means (:func:`raise_on_drift`).
    """
    import copy

    from hidiff.graphs import graph_modules

    precision = Precision.parse(precision)
    check_image_multiple()
    reference = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    modules = graph_modules(reference, torch.float32)
    contracts = graph_contracts(*reference.prior_shape)
    engines: dict[str, Engine] = {}
    try:
        for name, path in paths.items():
            engines[name] = cpu_engine(path, contracts[name], precision)
        comparisons: list[Comparison] = []
        for name, engine in engines.items():
            comparisons += compare_graph(engine, modules[name], precision, reference.schedule.num_timesteps)
        if chain and set(engines) >= {LE_DM, DENOISE_STEP, RESTORMER}:
            comparisons += compare_chain(engines, reference, precision)
    except Exception as exc:  # ORT raises its own exception types (Fail, NotImplemented, ...)
        reason = _fp16_unsupported(exc) if precision is Precision.FP16 else None
        if reason is None:
            raise
        return Verification(precision, (), skipped=reason)
    finally:
        for engine in engines.values():
            engine.close()
    return Verification(precision, tuple(comparisons))


def raise_on_drift(verification: Verification) -> None:
    """Raise :class:`DriftError` listing every comparison beyond its tolerance."""
    drifts = [c for c in verification.comparisons if not c.ok]
    if drifts:
        raise DriftError(f"{verification.precision.value} graphs disagree with PyTorch: " + "; ".join(map(str, drifts)))
