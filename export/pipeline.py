"""Export, check and write the three graphs of a model into one folder, all or nothing.

    1. check the output folder (writable; no earlier export unless ``force``)
    2. export the graphs (:mod:`export.onnx_export`) into a staging folder inside it
    3. check each file: ``onnx.checker.check_model(full_check=True)``, float32 islands
    4. run them in ONNX Runtime against PyTorch (:mod:`export.verify`); a drift raises
    5. write the report and the manifest, then move everything into place (manifest last)

A failure at any step removes the staging folder, and the output folder if this run created it:
the folder holds either the previous export (untouched) or the complete new one.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.artifacts import MANIFEST_NAME, replace_durably, write_atomic
from engines.contracts import GRAPH_NAMES, IMAGE_MULTIPLE, Precision
from export.manifest import REPORT_NAME, build_manifest

if TYPE_CHECKING:
    from export.graph_check import GraphReport
    from export.verify import Verification
    from hidiff.model import HIDiff

Log = Callable[[str], None]
OUTPUT_FILES = (*(f"{name}.onnx" for name in GRAPH_NAMES), REPORT_NAME, MANIFEST_NAME)


class OutputDirError(ValueError):
    """The output folder cannot take the export (not a folder, not writable, or already used)."""


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    precision: Precision
    files: dict[str, Path]  # graph name -> .onnx
    manifest: dict[str, Any]
    reports: dict[str, "GraphReport"]
    verification: "Verification | None"
    seconds: dict[str, float]  # export time per graph


def check_output_dir(out_dir: Path, force: bool) -> None:
    """Refuse a path that is not a folder, or a folder holding an export unless ``force``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputDirError(f"output folder {out_dir} exists and is not a folder")
    for parent in out_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputDirError(f"cannot create output folder {out_dir}: {parent} is not a folder")
            break
    if out_dir.is_dir() and not force:
        present = [name for name in OUTPUT_FILES if (out_dir / name).exists()]
        if present:
            raise OutputDirError(f"{out_dir} already holds an export ({', '.join(present)}); "
                                 "pass --force to replace it, or choose another --out")


def _make_dirs(out_dir: Path) -> list[Path]:
    """Create ``out_dir`` and missing parents; return the folders created, outermost first."""
    missing = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from exc
    return list(reversed(missing))


def _remove_created(created: list[Path]) -> None:
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break  # someone else put something there: leave it


def _commit(stage: Path, out_dir: Path, names: list[str]) -> None:
    """Move the staged files into ``out_dir``, each on disk before its rename. The old manifest
    goes first and the new one comes last, so a manifest on disk always describes the graphs
    beside it."""
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    for name in names:
        if name != MANIFEST_NAME:
            replace_durably(stage / name, out_dir / name)
    replace_durably(stage / MANIFEST_NAME, out_dir / MANIFEST_NAME)


def export_onnx_dir(model: "HIDiff", out_dir: str | Path, precision: Precision | str, *, force: bool = False,
                    verify: bool = True, source: dict[str, Any] | None = None, progress: bool = True,
                    log: Log = print) -> ExportResult:
    """Write ``out_dir/{le_dm,denoise_step,restormer}.onnx``, ``export_report.json`` and
    ``manifest.json`` for ``model`` in ``precision``.

    Raises OutputDirError for an unusable folder, export.graph_check.GraphCheckError when a graph
    breaks a structural rule, export.verify.DriftError when ONNX Runtime disagrees with PyTorch
    beyond the tolerances, export.onnx_export.ExportError when the exporter fails.
    """
    import onnx

    from export.graph_check import graph_report, raise_for_violations
    from export.onnx_export import MAX_BATCH, MAX_SIDE, OPSET, check_exporter_versions, export_graphs
    from export.verify import raise_on_drift, verify_graphs

    precision = Precision.parse(precision)
    out_dir = Path(out_dir)
    # 1. the output folder
    check_exporter_versions()
    check_output_dir(out_dir, force)
    created = _make_dirs(out_dir)
    try:
        stage = Path(tempfile.mkdtemp(prefix=".export-", suffix=".tmp", dir=out_dir))
    except OSError as exc:
        _remove_created(created)
        raise OutputDirError(f"cannot write into output folder {out_dir}: {exc.strerror or exc}") from exc
    try:
        # 2. export
        log(f"exporting {precision.value} graphs of a {model.num_parameters():,}-parameter model to {out_dir}")
        graphs = export_graphs(model, precision, progress=progress)
        files: dict[str, Path] = {}
        reports: dict[str, GraphReport] = {}
        for name, graph in graphs.items():
            path = stage / f"{name}.onnx"
            onnx.save_model(graph.model, str(path))
            # 3. structural checks on what was written
            onnx.checker.check_model(str(path), full_check=True)
            reports[name] = graph_report(graph.model, name)
            raise_for_violations(reports[name].islands, name)
            files[name] = path
            log(f"{name}: exported in {graph.seconds:.1f} s, {reports[name].nodes} nodes, "
                f"{reports[name].parameters:,} parameters")
            if reports[name].decomposed_layer_norms:
                log(f"  note: {name} has {reports[name].decomposed_layer_norms} ReduceMean nodes, a LayerNorm written "
                    "out as mean and variance (BiasFree LayerNorm); runtimes fuse only LayerNormalization nodes")
        # 4. numbers
        verification = None
        if verify:
            verification = verify_graphs(files, model, precision)
            for line in verification.lines():
                log(f"  {line}")
            raise_on_drift(verification)
        # 5. report, manifest, move into place
        dynamic_ranges = {"batch": [1, MAX_BATCH], "height": [IMAGE_MULTIPLE, MAX_SIDE], "width": [IMAGE_MULTIPLE, MAX_SIDE]}
        manifest = build_manifest(model, precision, files, reports, verification, source or {"kind": "in-memory"},
                                  OPSET, dynamic_ranges)
        export_report = {
            "precision": precision.value,
            "graphs": {name: report.as_dict() for name, report in reports.items()},
            "export_seconds": {name: round(graph.seconds, 2) for name, graph in graphs.items()},
            "verification": manifest["verification"],
        }
        write_atomic(stage / REPORT_NAME, json.dumps(export_report, indent=2) + "\n")
        write_atomic(stage / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
        _commit(stage, out_dir, [f"{name}.onnx" for name in files] + [REPORT_NAME, MANIFEST_NAME])
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        _remove_created(created)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    final = {name: out_dir / f"{name}.onnx" for name in files}
    return ExportResult(out_dir, precision, final, manifest, reports, verification,
                        {name: graph.seconds for name, graph in graphs.items()})
