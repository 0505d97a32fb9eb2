"""engines.artifacts: hashing, the export manifest read and validated once, and artifacts folders
whose manifests name files outside them (crafted ``../``, absolute and symlinked names), refused
by name before anything is opened or hashed: by the ONNX Runtime backend, the registry, the
TensorRT build and the plan check."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from engines.artifacts import ArtifactPathError, ExportManifest, resolve_inside, sha256_file
from engines.base import EngineError
from engines.contracts import GRAPH_NAMES, LE_DM, RESTORMER, graph_contracts
from engines.onnxruntime_backend import onnxruntime_engines
from engines.plan import CorruptPlan, PlanRequirements, check_plan, plan_path_for
from engines.registry import open_engines
from export.trt_build import build_engines, trtexec_commands


def write_export(folder: Path, files: dict[str, str] | None = None) -> Path:
    """An export folder whose manifest names ``files`` ({graph: name}); a graph named by its plain
    file name gets that file (placeholder bytes: nothing here parses ONNX)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = files or {name: f"{name}.onnx" for name in GRAPH_NAMES}
    contracts = graph_contracts()
    graphs = {}
    for name, file in files.items():
        if "/" not in file and "\\" not in file:
            (folder / file).write_bytes(f"graph {name}".encode())
        digest = sha256_file(folder / file) if (folder / file).is_file() else "0" * 64
        graphs[name] = {"file": file, "sha256": digest, "contract": contracts[name].as_dict()}
    manifest = {"precision": "fp32", "model": {"prior_tokens": 16, "prior_channels": 256}, "graphs": graphs}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_sha256_file_is_the_files_sha256(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(bytes(range(256)) * 3)
    assert sha256_file(path, chunk=100) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_valid_manifest_is_read_once_for_every_reader(tmp_path):
    manifest = ExportManifest.read(write_export(tmp_path / "onnx"))
    assert manifest.prior_shape == (16, 256) and manifest.precision.value == "fp32"
    assert [g.name for g in manifest.select([RESTORMER, LE_DM])] == [RESTORMER, LE_DM]
    assert manifest.graphs[LE_DM].path == tmp_path / "onnx" / "le_dm.onnx"
    assert manifest.graphs[LE_DM].contract.as_dict() == graph_contracts()[LE_DM].as_dict()
    assert manifest.verified_file(LE_DM, graph_contracts()[LE_DM]) == tmp_path / "onnx" / "le_dm.onnx"
    (tmp_path / "onnx" / "le_dm.onnx").write_bytes(b"changed")
    with pytest.raises(EngineError, match=r"le_dm.onnx \(graph 'le_dm'\) has sha256 .* the file changed"):
        manifest.verified_file(LE_DM)


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.pop("precision"), r"KeyError: 'precision'"),
    (lambda d: d["graphs"]["le_dm"].pop("contract"), r"KeyError: 'contract'"),
    (lambda d: d["graphs"]["le_dm"].update(contract=graph_contracts()[RESTORMER].as_dict()),
     r"graph 'le_dm' carries the contract of 'restormer'"),
])
def test_a_malformed_manifest_is_refused(tmp_path, damage, message):
    folder = write_export(tmp_path / "onnx")
    data = json.loads((folder / "manifest.json").read_text())
    damage(data)
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"manifest.json is not a valid export manifest \(.*{message}"):
        ExportManifest.read(folder)


# ------------------------------------------------------------------------------------------ paths


def test_names_inside_the_folder_resolve(tmp_path):
    (tmp_path / "sub").mkdir()
    assert resolve_inside(tmp_path, "x.onnx", "test") == tmp_path / "x.onnx"
    assert resolve_inside(tmp_path, "sub/../x.onnx", "test") == tmp_path / "sub/../x.onnx"
    (tmp_path / "link.onnx").symlink_to(tmp_path / "sub" / "real.onnx")  # a link that stays inside
    assert resolve_inside(tmp_path, "link.onnx", "test") == tmp_path / "link.onnx"


@pytest.mark.parametrize("name, why", [
    ("../../x.onnx", r"resolves to .*x.onnx, outside the folder"),
    ("/abs/x.onnx", r"is an absolute path"),
    ("C:\\x.onnx", r"is an absolute path"),
    ("", r"is not a name"),
    (7, r"is not a name"),
])
def test_names_outside_the_folder_are_refused(tmp_path, name, why):
    with pytest.raises(ArtifactPathError, match=rf"graph 'le_dm' in M: .*{why}"):
        resolve_inside(tmp_path, name, "graph 'le_dm' in M")


@pytest.fixture(params=["dotdot", "absolute", "symlink"])
def escaping_export(request, tmp_path) -> Path:
    """An export folder whose manifest names a real ONNX file outside the folder."""
    outside = tmp_path / "secret.onnx"
    outside.write_bytes(b"not yours")
    folder = tmp_path / "a" / "onnx"
    if request.param == "dotdot":
        return write_export(folder, {LE_DM: "../../secret.onnx"})
    if request.param == "absolute":
        return write_export(folder, {LE_DM: str(outside)})
    folder.mkdir(parents=True)
    (folder / "le_dm.onnx").symlink_to(outside)
    return write_export(folder, {LE_DM: "le_dm.onnx"})


def test_every_reader_refuses_a_manifest_that_leaves_its_folder(escaping_export, tmp_path):
    refused = rf"graph 'le_dm' in {escaping_export}/manifest.json: .* so {escaping_export} is refused"
    with pytest.raises(ArtifactPathError, match=refused):
        ExportManifest.read(escaping_export)
    with pytest.raises(ArtifactPathError, match=refused):
        onnxruntime_engines(escaping_export)
    with pytest.raises(ArtifactPathError, match=refused):
        open_engines("onnxruntime", artifacts=escaping_export)
    with pytest.raises(ArtifactPathError, match=refused):
        trtexec_commands(escaping_export, tmp_path / "plans")
    with pytest.raises(ArtifactPathError, match=refused):
        build_engines(escaping_export, tmp_path / "plans", log=lambda line: None)
    assert not (tmp_path / "plans").exists()


def test_a_plan_linked_from_outside_its_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.plan"
    outside.write_bytes(b"ftrt plan bytes")
    plans = tmp_path / "plans"
    plans.mkdir()
    plan_path_for(plans, RESTORMER).symlink_to(outside)
    with pytest.raises(CorruptPlan, match=r"restormer.plan: 'restormer.plan' resolves to .*elsewhere.plan, outside") as info:
        check_plan(plan_path_for(plans, RESTORMER), PlanRequirements())
    assert info.value.reason == "outside its folder"
