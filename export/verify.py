"""Numeric verification of exported graphs: ONNX Runtime (CPU) against PyTorch in float32.

Each graph is run at shapes the export never saw (sides where H/16 is not an integer, a batch of
2) and compared with ``graph_modules(model, torch.float32)``; then the three graphs are chained by
a Python loop and compared with ``HIDiff(blur, noise)``. Errors are max absolute differences.

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

from engines.contracts import DENOISE_STEP, LE_DM, RESTORMER, GraphContract, Precision, graph_contracts

if TYPE_CHECKING:
    import onnxruntime

    from hidiff.model import HIDiff

FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2  # times max(1, max|reference|)
FP16_CHAIN_TOLERANCE = 2e-2
# (batch, height, width): none is the export example (2 x 64 x 80); 72/16 and 136/16 are not integers.
GRAPH_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 72, 104), (1, 48, 136), (2, 40, 56))
# The chain takes any size and pads like HIDiff.forward: 50 x 70 -> 56 x 72.
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


def cpu_session(path: str | Path) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime session on the CPU execution provider, all graph optimizations on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


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


def compare_graph(session: "onnxruntime.InferenceSession", module: torch.nn.Module, contract: GraphContract,
                  precision: Precision, num_timesteps: int,
                  shapes: Sequence[tuple[int, int, int]] = GRAPH_SHAPES) -> list[Comparison]:
    """Run one graph in ORT and its float32 PyTorch module at each (batch, height, width)."""
    results = []
    for index, (b, h, w) in enumerate(shapes):
        feeds = sample_feeds(contract, b, h, w, num_timesteps, seed=index)
        (got,) = session.run(list(contract.output_names), feeds)
        with torch.no_grad():
            want = module(*(torch.from_numpy(feeds[name]) for name in contract.input_names)).numpy()
        results.append(Comparison(contract.name, (b, h, w), _max_abs(got, want), _bound(precision, want, FP16_TOLERANCE)))
    return results


def run_chain(sessions: Mapping[str, "onnxruntime.InferenceSession"], blur: np.ndarray, noise: np.ndarray,
              num_timesteps: int) -> np.ndarray:
    """HI-Diff inference with the three ONNX graphs: blur (B, 3, H, W) float32 in [0, 1], any H, W;
    noise z_T (B, N, C') float32. Returns the sharp image (B, 3, H, W) float32."""
    from hidiff.model import crop_image, pad_image

    height, width = blur.shape[-2:]
    # 1. pad to multiples of 8 exactly as HIDiff.forward does
    padded = pad_image(torch.from_numpy(blur))[0].numpy()
    # 2. c = LE_DM(blur)
    (cond,) = sessions[LE_DM].run(None, {"blur": padded})
    # 3. z_{t-1} = denoise_step(z_t, c, t) for t = T-1 .. 0
    z = noise
    for t in range(num_timesteps - 1, -1, -1):
        (z,) = sessions[DENOISE_STEP].run(None, {"z": z, "cond": cond, "t": np.array([t], dtype=np.int64)})
    # 4. the prior-guided Restormer, cropped back
    (sharp,) = sessions[RESTORMER].run(None, {"blur": padded, "prior": z})
    return crop_image(torch.from_numpy(sharp), height, width).numpy()


def compare_chain(sessions: Mapping[str, "onnxruntime.InferenceSession"], model: "HIDiff", precision: Precision,
                  shapes: Sequence[tuple[int, int, int]] = CHAIN_SHAPES) -> list[Comparison]:
    """The chained graphs against ``model(blur, noise)`` (float32, CPU) at each shape."""
    results = []
    for index, (b, h, w) in enumerate(shapes):
        rng = np.random.default_rng(100 + index)
        blur = rng.random((b, 3, h, w), dtype=np.float32)
        noise = rng.standard_normal((b, *model.prior_shape), dtype=np.float32)
        got = run_chain(sessions, blur, noise, model.schedule.num_timesteps)
        with torch.no_grad():
            want = model(torch.from_numpy(blur), torch.from_numpy(noise)).numpy()
        results.append(Comparison("chain", (b, h, w), _max_abs(got, want), _bound(precision, want, FP16_CHAIN_TOLERANCE)))
    return results


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
    reference = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    modules = graph_modules(reference, torch.float32)
    contracts = graph_contracts(*reference.prior_shape)
    try:
        sessions = {name: cpu_session(path) for name, path in paths.items()}
        comparisons: list[Comparison] = []
        for name, session in sessions.items():
            comparisons += compare_graph(session, modules[name], contracts[name], precision,
                                         reference.schedule.num_timesteps)
        if chain and set(sessions) >= {LE_DM, DENOISE_STEP, RESTORMER}:
            comparisons += compare_chain(sessions, reference, precision)
    except Exception as exc:  # ORT raises its own exception types (Fail, NotImplemented, ...)
        reason = _fp16_unsupported(exc) if precision is Precision.FP16 else None
        if reason is None:
            raise
        return Verification(precision, (), skipped=reason)
    return Verification(precision, tuple(comparisons))


def raise_on_drift(verification: Verification) -> None:
    """Raise :class:`DriftError` listing every comparison beyond its tolerance."""
    drifts = [c for c in verification.comparisons if not c.ok]
    if drifts:
        raise DriftError(f"{verification.precision.value} graphs disagree with PyTorch: " + "; ".join(map(str, drifts)))
