"""Structural checks of an exported ONNX graph: float32 islands, fused LayerNorms, a node report.

The float32-island rule: in a float16 graph every statistic over many elements must
be computed in float32, because TensorRT's strongly typed builder computes a node in its input's
type. Concretely, these must have float32 inputs:

- every ``LayerNormalization`` (the moments over channels),
- every reduction that computes a norm or a mean (``ReduceL2``, ``ReduceSumSquare``,
  ``ReduceMean``, ``ReduceSum``): Restormer's L2 normalisation of q and k over H*W lowers to
  ``ReduceL2 -> Clip -> Expand -> Div``,
- every ``MatMul`` fed by such a normalisation (through layout-only ops), whose product is
  divided by such norms, or that multiplies a tensor by its own transpose (a Gram matrix): q k^T,
  which contracts over H*W (our MDTA takes q k^T and the norms from one Gram product of [q; k]).

Types come from the graph's value_info after ONNX shape inference.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

STATISTIC_OPS = ("LayerNormalization", "ReduceL2", "ReduceSumSquare", "ReduceMean", "ReduceSum")
NORM_REDUCTIONS = ("ReduceL2", "ReduceSumSquare")
# Ops that only move or relabel data: a normalised tensor stays normalised through them.
LAYOUT_OPS = ("Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten", "Expand")
# Ops that only carry a normalisation's divisor from the reduction to the Div.
DIVISOR_OPS = ("Clip", "Max", "Expand", "Add", "Sqrt", "Cast", "Identity", "Mul", "Unsqueeze", "Reshape")
FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


class GraphCheckError(ValueError):
    """An exported graph breaks a structural rule; the message names every offending node."""


def _elem_types(model: "onnx.ModelProto") -> dict[str, int]:
    """Element type of every tensor: graph I/O, initializers and inferred intermediate values."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _producers(model: "onnx.ModelProto") -> dict[str, "onnx.NodeProto"]:
    return {out: node for node in model.graph.node for out in node.output}


def _consumers(model: "onnx.ModelProto") -> dict[str, list["onnx.NodeProto"]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _comes_from_norm(name: str, producers: dict[str, "onnx.NodeProto"], depth: int = 6) -> bool:
    """Whether ``name`` is a norm reduction's output, possibly through divisor-only ops."""
    node = producers.get(name)
    for _ in range(depth):
        if node is None:
            return False
        if node.op_type in NORM_REDUCTIONS:
            return True
        if node.op_type not in DIVISOR_OPS or not node.input:
            return False
        node = producers.get(node.input[0])
    return False


def _layout_source(name: str, producers: dict[str, "onnx.NodeProto"], depth: int = 4) -> str:
    """The tensor ``name`` is a relabelling of, through layout-only ops (itself if none)."""
    for _ in range(depth):
        node = producers.get(name)
        if node is None or node.op_type not in LAYOUT_OPS or not node.input:
            return name
        name = node.input[0]
    return name


def _matmul_behind(name: str, producers: dict[str, "onnx.NodeProto"]) -> "onnx.NodeProto | None":
    """The MatMul that produced ``name``, possibly through layout-only ops."""
    node = producers.get(_layout_source(name, producers))
    return node if node is not None and node.op_type == "MatMul" else None


def gram_matmuls(model: "onnx.ModelProto") -> list["onnx.NodeProto"]:
    """MatMul nodes that multiply a tensor by its own transpose: Gram matrices, sums of products
    over the contracted axis (our MDTA's [q; k][q; k]^T over H*W)."""
    producers = _producers(model)
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        second = producers.get(node.input[1])
        if second is not None and second.op_type == "Transpose" and \
                _layout_source(second.input[0], producers) == _layout_source(node.input[0], producers):
            found.append(node)
    return found


def normalised_matmuls(model: "onnx.ModelProto") -> list["onnx.NodeProto"]:
    """MatMul nodes that consume a tensor divided by its own norm, whose product is divided by
    norms, or that form a Gram matrix (q k^T of Restormer's MDTA, in each formulation)."""
    producers, consumers = _producers(model), _consumers(model)
    norm_divs = [
        node for node in model.graph.node
        if node.op_type == "Div" and len(node.input) == 2 and _comes_from_norm(node.input[1], producers)
    ]
    found: dict[str, onnx.NodeProto] = {node.name or node.output[0]: node for node in gram_matmuls(model)}
    for div in norm_divs:
        numerator = _matmul_behind(div.input[0], producers)
        if numerator is not None:
            found[numerator.name or numerator.output[0]] = numerator
    frontier = [node.output[0] for node in norm_divs]
    seen: set[str] = set()
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in consumers.get(name, []):
            if node.op_type == "MatMul":
                found[node.name or node.output[0]] = node
            elif node.op_type in LAYOUT_OPS:
                frontier.extend(node.output)
    return list(found.values())


@dataclass(frozen=True)
class IslandReport:
    """Which statistic nodes a graph has and which of them do not run on float32."""

    statistics: dict[str, int]  # op type -> count of nodes checked
    normalised_matmuls: int
    violations: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {"statistics": dict(self.statistics), "normalised_matmuls": self.normalised_matmuls,
                "violations": list(self.violations)}


def float32_islands(model: "onnx.ModelProto") -> IslandReport:
    """Check that statistics and normalised products run on float32 tensors (see module doc)."""
    types = _elem_types(model)
    violations: list[str] = []
    statistics: Counter[str] = Counter()

    def check(node: "onnx.NodeProto", inputs: list[str]) -> None:
        for name in inputs:
            elem = types.get(name)
            if elem is None:
                violations.append(f"{node.op_type} {node.name!r}: type of input {name!r} is unknown")
            elif elem in FLOAT_TYPES and elem != 1:
                violations.append(f"{node.op_type} {node.name!r}: input {name!r} is {FLOAT_TYPES[elem]}, not float32")

    for node in model.graph.node:
        if node.op_type in STATISTIC_OPS:
            statistics[node.op_type] += 1
            check(node, [node.input[0]])  # the data input; axes and affine parameters follow it
    matmuls = normalised_matmuls(model)
    for node in matmuls:
        check(node, list(node.input))
    return IslandReport(dict(sorted(statistics.items())), len(matmuls), tuple(violations))


def raise_for_violations(report: IslandReport, graph_name: str) -> IslandReport:
    """Raise :class:`GraphCheckError` naming the offending nodes if ``report`` has any."""
    if not report.ok:
        shown = "; ".join(report.violations[:10])
        more = f" (and {len(report.violations) - 10} more)" if len(report.violations) > 10 else ""
        raise GraphCheckError(f"graph {graph_name!r}: statistics outside float32: {shown}{more}")
    return report


def check_float32_islands(model: "onnx.ModelProto", graph_name: str) -> IslandReport:
    """:func:`float32_islands`, raising :class:`GraphCheckError` on any violation."""
    return raise_for_violations(float32_islands(model), graph_name)


def op_counts(model: "onnx.ModelProto") -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(Counter(node.op_type for node in model.graph.node).most_common())


def parameter_count(model: "onnx.ModelProto") -> int:
    """Elements of the graph's floating-point initializers (weights and baked tables)."""
    import numpy as np

    total = 0
    for tensor in model.graph.initializer:
        if tensor.data_type in FLOAT_TYPES:
            total += int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1
    return total


def decomposed_layer_norms(model: "onnx.ModelProto") -> int:
    """``ReduceMean`` nodes: a LayerNorm written out as mean/variance shows up as two of them."""
    return sum(1 for node in model.graph.node if node.op_type == "ReduceMean")


def unfolded_constants(model: "onnx.ModelProto") -> int:
    """Nodes every input of which is a constant (an initializer or a ``Constant`` output):
    subgraphs a constant-folding pass would have replaced by their value. Nodes without inputs
    (``Constant`` itself, ``RandomNormal``) are not counted."""
    constant = {t.name for t in model.graph.initializer}
    constant |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return sum(
        1 for node in model.graph.node
        if node.op_type != "Constant" and node.input and all(name in constant or name == "" for name in node.input)
    )


def _shape_of(value: "onnx.ValueInfoProto") -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def image_transposes(model: "onnx.ModelProto") -> dict[str, int]:
    """Transposes in total and those whose input's size depends on the image's height or width
    (each of those is a full copy of a feature map at some scale)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: _shape_of(v) for v in [*inferred.graph.input, *inferred.graph.value_info]}
    transposes = [n for n in inferred.graph.node if n.op_type == "Transpose"]

    def image_sized(name: str) -> bool:
        # Symbolic sizes other than the batch come from the image's height and width.
        return any(isinstance(d, str) and d and d != "batch" for d in shapes.get(name, []))

    on_images = sum(1 for n in transposes if image_sized(n.input[0]))
    return {"total": len(transposes), "on_image_tensors": on_images}


@dataclass(frozen=True)
class GraphReport:
    """What the command prints and writes beside each graph."""

    name: str
    nodes: int
    parameters: int
    op_counts: dict[str, int]
    layer_norms: int
    decomposed_layer_norms: int
    transposes: dict[str, int]
    unfolded_constants: int
    islands: IslandReport

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodes": self.nodes,
            "parameters": self.parameters,
            "op_counts": dict(self.op_counts),
            "layer_norms": self.layer_norms,
            "decomposed_layer_norms": self.decomposed_layer_norms,
            "transposes": dict(self.transposes),
            "unfolded_constants": self.unfolded_constants,
            "float32_islands": self.islands.as_dict(),
        }


def graph_report(model: "onnx.ModelProto", name: str) -> GraphReport:
    counts = op_counts(model)
    return GraphReport(
        name=name,
        nodes=len(model.graph.node),
        parameters=parameter_count(model),
        op_counts=counts,
        layer_norms=counts.get("LayerNormalization", 0),
        decomposed_layer_norms=decomposed_layer_norms(model),
        transposes=image_transposes(model),
        unfolded_constants=unfolded_constants(model),
        islands=float32_islands(model),
    )


def format_table(reports: list[GraphReport]) -> str:
    """A plain-text table: one column per graph, one row per op type (plus totals)."""
    names = [r.name for r in reports]
    ops = sorted({op for r in reports for op in r.op_counts}, key=lambda op: (-sum(r.op_counts.get(op, 0) for r in reports), op))
    rows: list[list[str]] = [["", *names]]
    rows.append(["parameters", *(f"{r.parameters:,}" for r in reports)])
    rows.append(["nodes", *(str(r.nodes) for r in reports)])
    rows.append(["transposes on image tensors", *(str(r.transposes["on_image_tensors"]) for r in reports)])
    rows.append(["statistics checked float32", *(str(sum(r.islands.statistics.values())) for r in reports)])
    rows.append(["q.k^T MatMuls checked float32", *(str(r.islands.normalised_matmuls) for r in reports)])
    rows.append(["island violations", *(str(len(r.islands.violations)) for r in reports)])
    rows.extend([op, *(str(r.op_counts.get(op, 0)) for r in reports)] for op in ops)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
