"""engines.plan: manifests, every PlanMismatch reason and every CorruptPlan case.

The plans here are byte strings, not TensorRT engines: the checks read bytes and manifests only,
which is the point (they must run before TensorRT sees a file).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from engines.artifacts import contract_from_dict
from engines.base import EngineError
from engines.contracts import RESTORMER, ShapeProfile, graph_contracts
from engines.plan import (
    CorruptPlan,
    PlanManifest,
    PlanMismatch,
    PlanRequirements,
    check_plan,
    manifest_path,
    needs_rebuild,
    plan_path_for,
    read_verified_plan,
    supports_compute_capability,
)

PLAN = b"ftrt" + bytes(range(256)) * 40  # stands in for a serialized engine
PROFILES = (ShapeProfile(), ShapeProfile((1, 256, 256), (1, 256, 256), (1, 256, 256)))
H100 = dict(gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0))


def manifest_for(plan: bytes = PLAN, **overrides) -> PlanManifest:
    fields = dict(graph=RESTORMER, precision="fp16", flavour="tensorrt", trt_version="10.13.0.35", **H100,
                  profiles=PROFILES, onnx_sha256="ab" * 32, opt_level=3, versions={"tensorrt": "10.13.0.35"},
                  contract=graph_contracts()[RESTORMER].as_dict())
    fields.update(overrides)
    return PlanManifest.describe(plan, **fields)


def requirements(**overrides) -> PlanRequirements:
    fields = dict(graph=RESTORMER, flavour="tensorrt", trt_version="10.13.0.35", **H100, precision="fp16",
                  profiles=PROFILES, onnx_sha256="ab" * 32)
    fields.update(overrides)
    return PlanRequirements(**fields)


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = plan_path_for(tmp_path, RESTORMER)
    path.write_bytes(PLAN)
    manifest_for().write(manifest_path(path))
    return path


# ----------------------------------------------------------------------------- manifests


def test_paths_follow_the_name_plan_json_convention(tmp_path):
    assert plan_path_for(tmp_path, "le_dm") == tmp_path / "le_dm.plan"
    assert manifest_path(tmp_path / "le_dm.plan") == tmp_path / "le_dm.plan.json"


def test_manifest_round_trips_through_json(tmp_path):
    manifest = manifest_for()
    assert manifest.plan_size == len(PLAN) and manifest.plan_header == PLAN[:16].hex()
    manifest.write(tmp_path / "m.json")
    on_disk = json.loads((tmp_path / "m.json").read_text())
    assert on_disk["profiles"][0] == {"min": [1, 256, 256], "opt": [1, 720, 1280], "max": [4, 1080, 1920]}
    assert on_disk["compute_capability"] == [9, 0] and on_disk["format"] == 1
    assert PlanManifest.read(tmp_path / "m.json") == manifest
    assert contract_from_dict(manifest.contract) == replace(graph_contracts()[RESTORMER], description="")


@pytest.mark.parametrize("damage", [
    lambda d: d.pop("plan_sha256"),
    lambda d: d.update(format=99),
    lambda d: d.update(profiles=[{"min": [1, 2]}]),
])
def test_manifest_reading_is_strict(damage):
    d = manifest_for().as_dict()
    damage(d)
    with pytest.raises(ValueError):
        PlanManifest.from_dict(d)


# ----------------------------------------------------------------------------- a good plan


def test_a_matching_plan_passes(plan):
    check_plan(plan, requirements())
    manifest, data = read_verified_plan(plan, requirements())
    assert data == PLAN and manifest.graph == RESTORMER
    assert needs_rebuild(plan, requirements()) is None


def test_unset_requirements_are_not_checked(plan):
    check_plan(plan, PlanRequirements())  # what a caller that knows nothing yet may ask


# ----------------------------------------------------------------------------- PlanMismatch


@pytest.mark.parametrize("change, reason, words", [
    (dict(gpu_name="NVIDIA A100-SXM4-80GB", compute_capability=(8, 0)), "another GPU", "NVIDIA A100"),
    (dict(compute_capability=(9, 1)), "another GPU", "(9, 1)"),
    (dict(trt_version="10.14.1.48"), "another TensorRT version", "'10.13.0.35' in the plan, '10.14.1.48' expected"),
    (dict(flavour="tensorrt_rtx"), "another TensorRT version", "'tensorrt' in the plan, 'tensorrt_rtx'"),
    (dict(onnx_sha256="cd" * 32), "source graph changed", "ONNX sha256"),
    (dict(profiles=(ShapeProfile(),)), "profiles changed", "'max': [4, 1080, 1920]"),
    (dict(precision="fp32"), "precision changed", "'fp16' in the plan, 'fp32' expected"),
    (dict(graph="le_dm"), "another graph", "'restormer' in the plan, 'le_dm' expected"),
])
def test_every_mismatch_is_refused_by_name(plan, change, reason, words):
    with pytest.raises(PlanMismatch) as info:
        check_plan(plan, requirements(**change))
    err = info.value
    assert isinstance(err, EngineError)  # the runtime catches one family of errors
    assert err.reason == reason and words in str(err) and str(plan) in str(err)
    assert "build_engines.py" in str(err)
    assert needs_rebuild(plan, requirements(**change)).startswith(reason)


def test_all_mismatches_are_listed(plan):
    with pytest.raises(PlanMismatch) as info:
        check_plan(plan, requirements(trt_version="11.4.0.106", precision="fp32", gpu_name="NVIDIA H200"))
    assert info.value.reasons == ("another TensorRT version", "another GPU", "precision changed")


def test_tensorrt_rtx_plans_move_between_supported_gpus_only(tmp_path):
    path = tmp_path / "le_dm.plan"
    path.write_bytes(PLAN)
    manifest_for(graph="le_dm", flavour="tensorrt_rtx", trt_version="1.2.0.54").write(manifest_path(path))
    rtx = dict(graph="le_dm", flavour="tensorrt_rtx", trt_version="1.2.0.54")
    check_plan(path, requirements(**rtx, gpu_name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9)))
    with pytest.raises(PlanMismatch, match="compute capability 9.0 is not supported by TensorRT-RTX") as info:
        check_plan(path, requirements(**rtx, **H100))
    assert info.value.reason == "another GPU"


def test_rtx_compute_capabilities():
    assert all(supports_compute_capability("tensorrt_rtx", cc) for cc in [(7, 5), (8, 0), (8, 6), (8, 9), (12, 0)])
    assert not any(supports_compute_capability("tensorrt_rtx", cc) for cc in [(9, 0), (10, 0), (7, 0), (8, 7)])
    assert supports_compute_capability("tensorrt", (9, 0))


# ----------------------------------------------------------------------------- CorruptPlan


def corrupt_reason(plan: Path) -> tuple[str, str]:
    with pytest.raises(CorruptPlan) as info:
        check_plan(plan, requirements())
    assert isinstance(info.value, EngineError)
    return info.value.reason, str(info.value)


def test_missing_plan(tmp_path):
    reason, message = corrupt_reason(tmp_path / "restormer.plan")
    assert reason == "missing plan" and "build_engines.py" in message
    assert needs_rebuild(tmp_path / "restormer.plan", requirements()).startswith("missing plan")


def test_missing_manifest(plan):
    manifest_path(plan).unlink()
    reason, message = corrupt_reason(plan)
    assert reason == "missing manifest" and "restormer.plan.json" in message


def test_unreadable_manifest(plan):
    manifest_path(plan).write_text("{not json")
    assert corrupt_reason(plan)[0] == "unreadable manifest"


def test_truncated_plan(plan):
    plan.write_bytes(PLAN[: len(PLAN) // 2])
    reason, message = corrupt_reason(plan)
    assert reason == "truncated" and f"{len(PLAN) // 2} bytes, {len(PLAN)} written" in message


def test_bit_flipped_plan(plan):
    data = bytearray(PLAN)
    data[5000] ^= 0x04
    plan.write_bytes(bytes(data))
    reason, message = corrupt_reason(plan)
    assert reason == "corrupt" and "sha256" in message


def test_plan_with_bytes_appended(plan):
    plan.write_bytes(PLAN + b"\0" * 10)
    reason, message = corrupt_reason(plan)
    assert reason == "corrupt" and f"{len(PLAN) + 10} bytes" in message


def test_foreign_bytes_under_a_valid_manifest(plan):
    plan.write_bytes(b"\xde\xad\xbe\xef" * 1000)
    reason, message = corrupt_reason(plan)
    assert reason == "foreign" and "not the plan its manifest describes" in message


def test_an_onnx_file_saved_as_a_plan_is_foreign(plan):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    plan.write_bytes(helper.make_model(graph, producer_name="pytorch").SerializeToString())
    onnx.checker.check_model(onnx.load(str(plan)))
    reason, message = corrupt_reason(plan)
    assert reason == "foreign" and "an ONNX model" in message


def test_a_torch_checkpoint_saved_as_a_plan_is_foreign(plan):
    torch.save({"params": torch.zeros(2)}, plan)
    reason, message = corrupt_reason(plan)
    assert reason == "foreign" and "zip archive" in message


def test_foreign_files_are_named_even_without_a_manifest(plan):
    manifest_path(plan).unlink()
    plan.write_text(json.dumps({"not": "a plan"}))
    assert corrupt_reason(plan)[0] == "foreign"


def test_the_manifest_must_describe_this_plan(tmp_path):
    path = tmp_path / "restormer.plan"
    path.write_bytes(PLAN)
    replace(manifest_for(), plan_sha256="00" * 32).write(manifest_path(path))
    assert corrupt_reason(path)[0] == "corrupt"
