"""Export the three HI-Diff graphs to ONNX with the dynamo exporter.

One function per concern: :func:`dynamic_shapes` turns a graph contract into ``torch.export.Dim``s,
:func:`export_graph` runs the exporter on one module of :func:`hidiff.graphs.graph_modules` and
returns the ONNX model (constants folded by the exporter's onnxscript optimizer) with the
contract's dimension names, and :func:`export_graphs` does it for the whole model in one precision.
Writing files, checking and verifying them is :mod:`export.pipeline`'s job.

Cost: the dynamo exporter traces and decomposes with symbolic shapes, tens of milliseconds per
node on a CPU; the GoPro-size Restormer (about 2000 nodes) takes minutes.

Shapes: image inputs are ``(batch, 3, height, width)`` float32 with height and width multiples of
8 (expressed as ``8 * Dim``, so the exporter proves the PixelUnshuffle divisions and no size is
baked in); priors are ``(batch, N, C')`` float32; ``t`` is int64 of shape (1,).
"""
from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from engines.contracts import IMAGE_MULTIPLE, GraphContract, Precision, graph_contracts

if TYPE_CHECKING:
    import onnx

    from hidiff.model import HIDiff

OPSET = 18  # LayerNormalization needs >= 17; 18 is the dynamo exporter's default (torch 2.9 .. 2.13).
MIN_ONNXSCRIPT = (0, 7, 1)  # PixelUnshuffle was exported with the wrong channel order before 0.7.1
MAX_BATCH = 64
MAX_SIDE = 8192  # per image side, in pixels; the TensorRT profile narrows this further

# Example shapes for tracing. Batch 2 (a batch of 1 would be specialised by torch.export) and
# sides that no test or profile uses, so verification at other shapes means something.
EXAMPLE_BATCH = 2
EXAMPLE_HEIGHT = 64
EXAMPLE_WIDTH = 80


class ExportError(RuntimeError):
    """The exporter failed on a graph; the message names the graph and the exporter's reason."""


@dataclass(frozen=True)
class ExportedGraph:
    """One exported graph: the ONNX model (in memory) and what it was made from."""

    name: str
    precision: Precision
    contract: GraphContract
    model: "onnx.ModelProto"
    seconds: float


def _version_tuple(text: str) -> tuple[int, ...]:
    """(major, minor, patch) from a version string; a pre-release "0.7.1rc1" counts as 0.7.0."""
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        match = re.match(r"\d+", piece)
        number = int(match[0]) if match else 0
        if match and match.end() < len(piece) and not piece[match.end():].startswith(("post", "dev")):
            number -= 1  # 1rc1, 1a2, 1b0: before the release itself
        parts.append(number)
    return tuple(parts)


def check_exporter_versions() -> dict[str, str]:
    """The versions the export relies on; raises RuntimeError for an onnxscript older than 0.7.1."""
    import onnx
    import onnxscript

    if _version_tuple(onnxscript.__version__) < MIN_ONNXSCRIPT:
        raise RuntimeError(
            f"onnxscript {onnxscript.__version__} is installed; >= {'.'.join(map(str, MIN_ONNXSCRIPT))} is required "
            "(older versions export PixelUnshuffle with the wrong channel order). Run: pip install -U 'onnxscript>=0.7.1'"
        )
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}


def dynamic_shapes(contract: GraphContract) -> dict[str, dict[int, Any] | None]:
    """``torch.export`` dynamic shapes for the contract's inputs: ``batch`` free in [1, MAX_BATCH],
    ``height``/``width`` as 8 * Dim so that only multiples of 8 are admitted."""
    from torch.export import Dim

    batch = Dim("batch", min=1, max=MAX_BATCH)
    sides = {
        axis: IMAGE_MULTIPLE * Dim(f"{axis}_{IMAGE_MULTIPLE}", min=1, max=MAX_SIDE // IMAGE_MULTIPLE)
        for axis in ("height", "width")
    }
    symbols = {"batch": batch, **sides}
    shapes: dict[str, dict[int, Any] | None] = {}
    for spec in contract.inputs:
        axes = {axis: symbols[name] for axis, name in spec.dynamic_axes.items()}
        shapes[spec.name] = axes or None
    return shapes


def example_inputs(contract: GraphContract, num_timesteps: int) -> tuple[torch.Tensor, ...]:
    """One tensor per contract input at the example shape, in contract order."""
    dims = {"batch": EXAMPLE_BATCH, "height": EXAMPLE_HEIGHT, "width": EXAMPLE_WIDTH, **contract.fixed_dims}
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for spec in contract.inputs:
        shape = spec.concrete(dims)
        if spec.dtype == "int64":
            tensors.append(torch.full(shape, num_timesteps - 1, dtype=torch.int64))
        elif spec.name == "blur":
            tensors.append(torch.rand(shape, generator=generator))
        else:
            tensors.append(torch.randn(shape, generator=generator))
    return tuple(tensors)


def _rename_dims(model: "onnx.ModelProto", contract: GraphContract) -> None:
    """Give the graph's I/O the contract's dimension names (the exporter writes ``8*height_8``)."""
    renames = {f"{IMAGE_MULTIPLE}*{axis}_{IMAGE_MULTIPLE}": axis for axis in ("height", "width")}
    graph = model.graph
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]


def _check_io(model: "onnx.ModelProto", contract: GraphContract) -> None:
    """The exported I/O must be the contract's, name by name, dtype by dtype, axis by axis."""
    import onnx

    def describe(value: "onnx.ValueInfoProto") -> tuple[str, str, tuple[Any, ...]]:
        t = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        shape = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim)
        return value.name, dtype, shape

    for label, got_values, want_specs in (
        ("inputs", model.graph.input, contract.inputs),
        ("outputs", model.graph.output, contract.outputs),
    ):
        got = [describe(v) for v in got_values]
        want = [(s.name, s.dtype, tuple(s.shape)) for s in want_specs]
        if got != want:
            raise ExportError(f"graph {contract.name!r}: exported {label} {got} differ from the contract {want}")


def export_graph(module: torch.nn.Module, contract: GraphContract, precision: Precision,
                 num_timesteps: int) -> ExportedGraph:
    """Export one graph module (from :func:`hidiff.graphs.graph_modules`) to an in-memory ONNX model."""
    args = example_inputs(contract, num_timesteps)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # Two warnings about the exporter's own internals (a deprecated pytree check, and the
            # batch symbol shared by two inputs, which is what we ask for); neither concerns the graph.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*", category=UserWarning)
            program = torch.onnx.export(
                module,
                args,
                None,
                dynamo=True,
                input_names=list(contract.input_names),
                output_names=list(contract.output_names),
                dynamic_shapes=dynamic_shapes(contract),
                opset_version=OPSET,
                external_data=False,
                # onnxscript's optimizer: constant folding, dead-node removal and its rewrite rules
                # (graph_check.unfolded_constants verifies that nothing foldable is left).
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; name the graph and keep the cause
        raise ExportError(f"torch.onnx.export failed on graph {contract.name!r} ({precision.value}): {exc}") from exc
    if program is None:  # only when an f= path was given; we pass None
        raise ExportError(f"torch.onnx.export returned no program for graph {contract.name!r}")
    model = program.model_proto
    _rename_dims(model, contract)
    _check_io(model, contract)
    return ExportedGraph(contract.name, precision, contract, model, time.perf_counter() - start)


def export_graphs(model: "HIDiff", precision: Precision | str, names: tuple[str, ...] | None = None,
                  progress: bool = True) -> dict[str, ExportedGraph]:
    """Export the graphs of ``model`` (all three unless ``names``) in ``precision``.

    fp16: the model's weights are cast on a copy (``model.half()`` leaves the caller's model as it
    is) and the graphs computed by ``graph_modules(model.half(), torch.float16)`` are exported; their
    I/O stay float32 and their float32 islands are the model's own casts (hidiff/restormer.py
    LayerNorm and MDTA, hidiff/latent_encoder.py Float32LayerNorm). The fp16 Restormer is exported
    with its channel counts zero-padded to multiples of 8 (:mod:`hidiff.aligned_channels`: the same
    results, tensor-core kernels for every convolution).
    """
    import copy

    from tqdm import tqdm

    from hidiff.aligned_channels import align_channels
    from hidiff.graphs import graph_modules

    precision = Precision.parse(precision)
    check_exporter_versions()
    dtype = torch.float16 if precision is Precision.FP16 else torch.float32
    source = copy.deepcopy(model).to(device="cpu", dtype=dtype).eval()
    if precision is Precision.FP16:
        align_channels(source.restormer)
    modules = graph_modules(source, dtype)
    contracts = graph_contracts(model.config.prior_tokens, model.config.prior_channels)
    wanted = names or tuple(contracts)
    unknown = [n for n in wanted if n not in contracts]
    if unknown:
        raise ValueError(f"unknown graph names {unknown}; expected some of {list(contracts)}")
    exported: dict[str, ExportedGraph] = {}
    num_timesteps = model.schedule.num_timesteps
    with torch.no_grad():
        for name in tqdm(wanted, desc=f"export {precision.value}", unit="graph", disable=not progress):
            exported[name] = export_graph(modules[name], contracts[name], precision, num_timesteps)
    return exported
