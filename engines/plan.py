"""Self-describing TensorRT engine files: ``NAME.plan`` with its manifest ``NAME.plan.json``.

A serialized engine only runs on the TensorRT version and (for TensorRT proper) the GPU model
that built it, and ``deserialize_cuda_engine`` answers a mismatched, truncated or foreign file
with ``None`` (NVIDIA/TensorRT#2176, #3834, #3848). So every plan carries a manifest (graph,
precision, TensorRT flavour and version, GPU, profiles, source ONNX hash, plan hash and size),
and :func:`check_plan` runs *before* deserialization: a bad file becomes a named error
(:class:`CorruptPlan`, :class:`PlanMismatch`) that says what to rebuild.

Pure Python: reading and checking a plan needs neither TensorRT nor a GPU.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from engines.artifacts import (
    ArtifactError,
    ArtifactMismatch,
    ArtifactPathError,
    JsonManifest,
    resolve_inside,
)
from engines.contracts import ShapeProfile

Flavour = Literal["tensorrt", "tensorrt_rtx"]
FLAVOURS: tuple[str, ...] = get_args(Flavour)
MANIFEST_FORMAT = 1
HEADER_BYTES = 16  # the plan's first bytes, kept in the manifest to tell a foreign file from a damaged one

# Compute capabilities TensorRT-RTX 1.x runs engines on: 8.0, 8.6, 8.9 and 12.x by default, 7.5
# (Turing) when the engine is built for it. Hopper (9.0, H100/H200) is not among them.
# Sources: TensorRT-RTX docs, "CPU-Only AOT and TensorRT-RTX Engines" and the 1.x support matrices.
RTX_COMPUTE_CAPABILITIES: tuple[tuple[int, int], ...] = ((7, 5), (8, 0), (8, 6), (8, 9))
RTX_COMPUTE_MAJORS: tuple[int, ...] = (12,)

CorruptReason = Literal["missing plan", "missing manifest", "unreadable manifest", "truncated", "corrupt", "foreign",
                        "outside its folder"]
MismatchReason = Literal["another graph", "another GPU", "another TensorRT version", "source graph changed",
                         "profiles changed", "precision changed"]


def supports_compute_capability(flavour: str, capability: tuple[int, int]) -> bool:
    """Whether engines of ``flavour`` can run on a GPU of ``capability`` at all."""
    if flavour == "tensorrt_rtx":
        return tuple(capability) in RTX_COMPUTE_CAPABILITIES or capability[0] in RTX_COMPUTE_MAJORS
    return True  # TensorRT proper builds for whatever GPU it runs on


def plan_path_for(plan_dir: str | Path, graph: str) -> Path:
    """Where the plan of ``graph`` lives in a folder of engines: ``plan_dir/graph.plan``."""
    return Path(plan_dir) / f"{graph}.plan"


def manifest_path(plan_path: str | Path) -> Path:
    """``NAME.plan`` -> ``NAME.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".json")


class PlanError(ArtifactError):
    """A plan file cannot be used; ``reason`` names why in a few words, ``path`` is the plan."""


class CorruptPlan(PlanError):
    """The plan or its manifest is missing, damaged or not a TensorRT plan at all."""


class PlanMismatch(PlanError, ArtifactMismatch):
    """The plan is intact but was built for something else (every mismatch in ``reasons``)."""

    def __init__(self, path: Path, mismatches: list[tuple[str, str]]):
        ArtifactMismatch.__init__(self, path, mismatches, "engine plan",
                                  "Rebuild it with python export/build_engines.py (it rebuilds only the plans that "
                                  "no longer match)")


@dataclass(frozen=True)
class PlanManifest(JsonManifest):
    """Everything a plan was built from and for. Written as ``NAME.plan.json`` beside ``NAME.plan``."""

    graph: str
    precision: str
    flavour: str  # "tensorrt" or "tensorrt_rtx"
    trt_version: str  # the flavour's own version, e.g. "10.13.0.35" or "1.2.0.54"
    gpu_name: str | None  # the GPU that built the plan; None for a TensorRT-RTX build without a GPU
    compute_capability: tuple[int, int] | None
    profiles: tuple[ShapeProfile, ...]  # image-size profiles, one TensorRT optimization profile each
    onnx_sha256: str
    plan_sha256: str
    plan_size: int
    plan_header: str  # hex of the plan's first HEADER_BYTES bytes
    opt_level: int
    created: str  # ISO 8601, UTC
    versions: dict[str, str] = field(default_factory=dict)  # library versions at build time
    contract: dict[str, Any] = field(default_factory=dict)  # GraphContract.as_dict() of the graph
    dla_core: int | None = None  # the DLA core the plan runs on (GPU fallback for the rest); None: the GPU
    format: int = MANIFEST_FORMAT

    @classmethod
    def describe(cls, plan: bytes, **fields: Any) -> "PlanManifest":
        """The manifest of ``plan`` (bytes as they will be written): hashes, size and header are
        computed here, ``created`` defaults to now; everything else comes from ``fields``."""
        fields.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        return cls(plan_sha256=hashlib.sha256(plan).hexdigest(), plan_size=len(plan),
                   plan_header=plan[:HEADER_BYTES].hex(), **fields)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "graph": self.graph,
            "precision": self.precision,
            "flavour": self.flavour,
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability) if self.compute_capability else None,
            "profiles": [p.as_dict() for p in self.profiles],
            "onnx_sha256": self.onnx_sha256,
            "plan_sha256": self.plan_sha256,
            "plan_size": self.plan_size,
            "plan_header": self.plan_header,
            "opt_level": self.opt_level,
            "created": self.created,
            "versions": dict(self.versions),
            "contract": self.contract,
            "dla_core": self.dla_core,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PlanManifest":
        """Strict: a missing key, an unknown format or a bad value raises ValueError."""
        if d.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"manifest format {d.get('format')!r}, this code reads format {MANIFEST_FORMAT}")
        try:
            cc = d["compute_capability"]
            return cls(
                graph=str(d["graph"]),
                precision=str(d["precision"]),
                flavour=str(d["flavour"]),
                trt_version=str(d["trt_version"]),
                gpu_name=None if d["gpu_name"] is None else str(d["gpu_name"]),
                compute_capability=None if cc is None else (int(cc[0]), int(cc[1])),
                profiles=tuple(ShapeProfile.from_dict(p) for p in d["profiles"]),
                onnx_sha256=str(d["onnx_sha256"]),
                plan_sha256=str(d["plan_sha256"]),
                plan_size=int(d["plan_size"]),
                plan_header=str(d["plan_header"]),
                opt_level=int(d["opt_level"]),
                created=str(d["created"]),
                versions={str(k): str(v) for k, v in d["versions"].items()},
                contract=dict(d["contract"]),
                dla_core=None if d.get("dla_core") is None else int(d["dla_core"]),  # absent before DLA builds
            )
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
            raise ValueError(f"manifest field missing or malformed: {exc!r}") from exc


@dataclass(frozen=True)
class PlanRequirements:
    """What the caller needs the plan to be. ``None`` fields are not checked: the runtime knows
    the GPU and TensorRT it has, the builder also knows the ONNX, precision and profiles."""

    graph: str | None = None
    flavour: str | None = None
    trt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: tuple[int, int] | None = None
    precision: str | None = None
    profiles: tuple[ShapeProfile, ...] | None = None
    onnx_sha256: str | None = None


def _sniff_foreign(head: bytes) -> str | None:
    """What a file that is certainly not a TensorRT plan looks like, from its first bytes."""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a PyTorch .pt checkpoint?)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle"
    if len(head) >= 10 and head[8:10] == b'{"':
        return "a safetensors file"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON document"
    # An ONNX ModelProto starts with field 1 (ir_version, a small varint) followed by another field tag.
    if len(head) >= 3 and head[0] == 0x08 and head[1] < 0x80 and head[2] in (0x12, 0x1A, 0x22, 0x2A, 0x3A, 0x42):
        return "an ONNX model (build it into a plan with python export/build_engines.py)"
    return None


def _read_manifest(plan_path: Path, head: bytes) -> PlanManifest:
    path = manifest_path(plan_path)
    if not path.is_file():
        what = _sniff_foreign(head)
        if what is not None:
            raise CorruptPlan(plan_path, "foreign", f"{plan_path} is not a TensorRT plan: it looks like {what}")
        raise CorruptPlan(plan_path, "missing manifest",
                          f"engine plan {plan_path} has no manifest {path.name}: it was not written by "
                          "export/build_engines.py or its build was interrupted. Rebuild it.")
    try:
        return PlanManifest.read(path)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise CorruptPlan(plan_path, "unreadable manifest",
                          f"manifest {path} of engine plan {plan_path} cannot be read ({exc}). Rebuild the plan.") from exc


def _check_bytes(plan_path: Path, data: bytes, manifest: PlanManifest) -> None:
    head = data[:HEADER_BYTES]
    expected_head = bytes.fromhex(manifest.plan_header)
    if head != expected_head[:len(head)]:
        # The file's first bytes differ from those the builder wrote. Only then is it worth guessing
        # what the file is: a real plan is never second-guessed by these heuristics.
        what = _sniff_foreign(data[:64])
        found = f"it looks like {what}" if what else f"its first bytes are {head.hex()}, the built plan's were " \
                                                      f"{manifest.plan_header}"
        raise CorruptPlan(plan_path, "foreign",
                          f"{plan_path} is not the plan its manifest describes: {found}. Another file was written "
                          "over it; rebuild it.")
    if len(data) < manifest.plan_size:
        raise CorruptPlan(plan_path, "truncated",
                          f"engine plan {plan_path} is truncated: {len(data)} bytes, {manifest.plan_size} written "
                          "at build time (an interrupted copy or download?). Copy it again or rebuild it.")
    if len(data) > manifest.plan_size:
        raise CorruptPlan(plan_path, "corrupt",
                          f"engine plan {plan_path} has {len(data)} bytes, {manifest.plan_size} written at build "
                          "time. Copy it again or rebuild it.")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.plan_sha256:
        raise CorruptPlan(plan_path, "corrupt",
                          f"engine plan {plan_path} is corrupt: sha256 {digest}, {manifest.plan_sha256} at build "
                          "time (same size, so bytes were altered). Copy it again or rebuild it.")


def _mismatches(manifest: PlanManifest, expected: PlanRequirements) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def differs(reason: str, label: str, have: Any, want: Any) -> None:
        if want is not None and have != want:
            found.append((reason, f"{label} {have!r} in the plan, {want!r} expected"))

    differs("another graph", "graph", manifest.graph, expected.graph)
    differs("another TensorRT version", "flavour", manifest.flavour, expected.flavour)
    differs("another TensorRT version", "version", manifest.trt_version, expected.trt_version)
    if manifest.flavour == "tensorrt_rtx":
        # TensorRT-RTX plans are portable across its supported GPUs (the JIT step runs on the target).
        cc = expected.compute_capability
        if cc is not None and not supports_compute_capability("tensorrt_rtx", cc):
            found.append(("another GPU", f"compute capability {cc[0]}.{cc[1]} is not supported by TensorRT-RTX"))
    else:
        differs("another GPU", "GPU", manifest.gpu_name, expected.gpu_name)
        differs("another GPU", "compute capability", manifest.compute_capability, expected.compute_capability)
    differs("source graph changed", "ONNX sha256", manifest.onnx_sha256, expected.onnx_sha256)
    differs("precision changed", "precision", manifest.precision, expected.precision)
    if expected.profiles is not None and manifest.profiles != tuple(expected.profiles):
        have = [p.as_dict() for p in manifest.profiles]
        want = [p.as_dict() for p in expected.profiles]
        found.append(("profiles changed", f"profiles {have} in the plan, {want} expected"))
    return found


def read_verified_plan(plan_path: str | Path, expected: PlanRequirements) -> tuple[PlanManifest, bytes]:
    """The manifest and bytes of a plan that passed :func:`check_plan` (one read of the file)."""
    plan_path = Path(plan_path)
    try:  # a plan or manifest that is a link out of the folder is refused before either is read
        for path in (plan_path, manifest_path(plan_path)):
            resolve_inside(plan_path.parent, path.name, f"engine plan {plan_path}")
    except ArtifactPathError as exc:
        raise CorruptPlan(plan_path, "outside its folder", str(exc)) from exc
    if not plan_path.is_file():
        raise CorruptPlan(plan_path, "missing plan",
                          f"engine plan {plan_path} does not exist; build it with python export/build_engines.py")
    data = plan_path.read_bytes()
    manifest = _read_manifest(plan_path, data[:64])
    _check_bytes(plan_path, data, manifest)
    mismatches = _mismatches(manifest, expected)
    if mismatches:
        raise PlanMismatch(plan_path, mismatches)
    return manifest, data


def check_plan(plan_path: str | Path, expected: PlanRequirements) -> None:
    """Raise :class:`CorruptPlan` or :class:`PlanMismatch` unless the plan is intact and fits
    ``expected``. Needs no TensorRT: run it before ``deserialize_cuda_engine``."""
    read_verified_plan(plan_path, expected)


def needs_rebuild(plan_path: str | Path, expected: PlanRequirements) -> str | None:
    """``None`` if the plan can be reused, else why not (``"profiles changed: ..."``)."""
    try:
        check_plan(plan_path, expected)
    except PlanMismatch as exc:
        return "; ".join(f"{r}: {d}" for r, d in zip(exc.reasons, exc.details))
    except CorruptPlan as exc:
        return f"{exc.reason}: {exc}"
    return None
