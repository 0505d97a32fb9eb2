"""export.adopt_plan: a plan that trtexec built is checked against the graph contracts and gets the
manifest the runtime needs, or is refused with every problem named.

TensorRT and a GPU cannot run here: ``trt_stand_in.fake_tensorrt`` deserializes a "plan" that
describes its I/O tensors and optimization profiles (what a real engine reports through the same
calls), and the GPU is either passed in (``gpu=``) or ``trt_stand_in.cuda_runtime``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from trt_stand_in import TRT_MODULES, cuda_runtime, fake_plan, fake_tensorrt, write_export

from engines.artifacts import sha256_file
from engines.contracts import DENOISE_STEP, LE_DM, RESTORMER, ShapeProfile, graph_contracts
from engines.cuda import DeviceInfo
from engines.plan import PlanManifest, PlanRequirements, check_plan, manifest_path
from export.adopt_plan import UNKNOWN_ONNX, BadInput, PlanRejected, adopt_plan, main

ORIN = DeviceInfo("Orin", (8, 7), 64 << 30, 16)
IMAGE = [[1, 3, 256, 256], [1, 3, 720, 1280], [4, 3, 1080, 1920]]


def prior(n: int = 16, c: int = 256, batches: tuple[int, int, int] = (1, 1, 4)) -> list[list[int]]:
    return [[b, n, c] for b in batches]


def restormer_io(n: int = 16, c: int = 256, blur: str = "FLOAT") -> dict:
    return {"blur": ["INPUT", blur, [-1, 3, -1, -1]], "prior": ["INPUT", "FLOAT", [-1, n, c]],
            "sharp": ["OUTPUT", "FLOAT", [-1, 3, -1, -1]]}


@pytest.fixture
def trt(monkeypatch):
    for name in TRT_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    module = fake_tensorrt("tensorrt", "10.3.0.30")
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


def write_plan(path: Path, io: dict, profiles: list[dict], **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(fake_plan(io, profiles, **kwargs))
    return path


def test_a_trtexec_plan_is_adopted_and_passes_the_runtimes_check(tmp_path, trt):
    plan = write_plan(tmp_path / "restormer.plan", restormer_io(4, 32),
                      [{"blur": IMAGE, "prior": prior(4, 32)}, {"blur": [[2, 3, 720, 1280]] * 3, "prior": prior(4, 32, (2, 2, 2))}])
    adopted = adopt_plan(plan, precision="fp16", trt=trt, gpu=ORIN)
    manifest = PlanManifest.read(manifest_path(plan))
    assert adopted.plan == plan and adopted.manifest == manifest
    assert (manifest.graph, manifest.precision, manifest.flavour, manifest.trt_version) == (
        RESTORMER, "fp16", "tensorrt", "10.3.0.30")
    assert (manifest.gpu_name, manifest.compute_capability, manifest.dla_core) == ("Orin", (8, 7), None)
    assert manifest.profiles == (ShapeProfile((1, 256, 256), (1, 720, 1280), (4, 1080, 1920)),
                                 ShapeProfile((2, 720, 1280), (2, 720, 1280), (2, 720, 1280)))
    # The prior's N and C' were read from the plan itself.
    assert manifest.contract == graph_contracts(4, 32)[RESTORMER].as_dict()
    assert manifest.onnx_sha256 == UNKNOWN_ONNX and manifest.plan_sha256 == sha256_file(plan)
    check_plan(plan, PlanRequirements(graph=RESTORMER, flavour="tensorrt", trt_version="10.3.0.30", gpu_name="Orin",
                                      compute_capability=(8, 7), precision="fp16"))


def test_the_denoiser_covers_every_image_size(tmp_path, trt):
    io = {"z": ["INPUT", "FLOAT", [-1, 16, 256]], "cond": ["INPUT", "FLOAT", [-1, 16, 256]],
          "t": ["INPUT", "INT64", [1]], "z_prev": ["OUTPUT", "FLOAT", [-1, 16, 256]]}
    plan = write_plan(tmp_path / "denoise_step.plan", io, [{"z": prior(), "cond": prior()}])
    [profile] = adopt_plan(plan, precision="fp32", trt=trt, gpu=ORIN).manifest.profiles
    assert profile == ShapeProfile((1, 8, 8), (1, 8, 8), (4, 8192, 8192))


def test_with_the_export_the_contract_precision_and_onnx_hash_come_from_its_manifest(tmp_path, trt):
    onnx_dir = write_export(tmp_path / "onnx")  # fp16, prior (16, 256)
    plan = write_plan(onnx_dir / "le_dm.plan", {"blur": ["INPUT", "FLOAT", [-1, 3, -1, -1]],
                                                "cond": ["OUTPUT", "FLOAT", [-1, 16, 256]]}, [{"blur": IMAGE}])
    manifest = adopt_plan(plan, onnx_dir=onnx_dir, trt=trt, gpu=ORIN).manifest
    assert manifest.precision == "fp16" and manifest.onnx_sha256 == sha256_file(onnx_dir / "le_dm.onnx")
    assert manifest.contract == graph_contracts()[LE_DM].as_dict()


def test_every_difference_from_the_contract_is_named(tmp_path, trt):
    onnx_dir = write_export(tmp_path / "onnx")  # the contract says prior (B, 16, 256)
    io = restormer_io(16, 128, blur="HALF")
    plan = write_plan(onnx_dir / "restormer.plan", io, [{"blur": IMAGE, "prior": prior(16, 128)}])
    with pytest.raises(PlanRejected) as rejected:
        adopt_plan(plan, onnx_dir=onnx_dir, trt=trt, gpu=ORIN)
    message = str(rejected.value)
    assert "'blur' is float16, float32 expected" in message
    assert "'prior' has shape (-1, 16, 128) in the plan, ('batch', 16, 256) expected" in message
    assert not manifest_path(plan).exists()

    del io["sharp"]
    with pytest.raises(PlanRejected, match=r"missing \['sharp'\]"):
        adopt_plan(write_plan(tmp_path / "b" / "restormer.plan", io, []), precision="fp16", trt=trt, gpu=ORIN)


def test_profiles_whose_inputs_disagree_are_refused(tmp_path, trt):
    plan = write_plan(tmp_path / "restormer.plan", restormer_io(),
                      [{"blur": IMAGE, "prior": prior(batches=(1, 1, 2))}])
    with pytest.raises(PlanRejected, match=r"profile 0 max: batch is 4 for one input and 2 for 'prior'"):
        adopt_plan(plan, precision="fp16", trt=trt, gpu=ORIN)
    plan = write_plan(tmp_path / "two" / "restormer.plan", restormer_io(), [])
    with pytest.raises(PlanRejected, match="no optimization profile"):
        adopt_plan(plan, precision="fp16", trt=trt, gpu=ORIN)


def test_a_plan_tensorrt_cannot_read_is_refused(tmp_path, trt):
    plan = write_plan(tmp_path / "restormer.plan", restormer_io(), [], unreadable=True)
    with pytest.raises(PlanRejected, match="TensorRT 10.3.0.30 cannot deserialize"):
        adopt_plan(plan, precision="fp16", trt=trt, gpu=ORIN)


def test_a_dla_plan_is_opened_on_its_core_and_the_core_recorded(tmp_path, trt):
    plan = write_plan(tmp_path / "restormer.plan", restormer_io(), [{"blur": IMAGE, "prior": prior()}])
    manifest = adopt_plan(plan, precision="fp16", dla_core=1, trt=trt, gpu=ORIN).manifest
    assert manifest.dla_core == 1 and trt.runtimes[-1].DLA_core == 1


def test_bad_input(tmp_path, trt):
    plan = write_plan(tmp_path / "engine_fp16.plan", restormer_io(), [{"blur": IMAGE, "prior": prior()}])
    with pytest.raises(BadInput, match="graph 'engine_fp16' is not one of"):
        adopt_plan(plan, precision="fp16", trt=trt, gpu=ORIN)
    with pytest.raises(BadInput, match="the runtime looks for restormer.plan"):
        adopt_plan(plan, RESTORMER, precision="fp16", trt=trt, gpu=ORIN)
    with pytest.raises(BadInput, match="--precision is needed without --onnx"):
        adopt_plan(plan, RESTORMER, out_dir=tmp_path / "plans", trt=trt, gpu=ORIN)
    with pytest.raises(BadInput, match="does not exist"):
        adopt_plan(tmp_path / "missing.plan", precision="fp16", trt=trt, gpu=ORIN)
    adopted = adopt_plan(plan, RESTORMER, precision="fp16", out_dir=tmp_path / "plans", trt=trt, gpu=ORIN)
    assert adopted.plan == tmp_path / "plans" / "restormer.plan" and adopted.plan.read_bytes() == plan.read_bytes()
    with pytest.raises(BadInput, match="exists already; pass --force"):
        adopt_plan(plan, RESTORMER, precision="fp16", out_dir=tmp_path / "plans", trt=trt, gpu=ORIN)
    adopt_plan(plan, RESTORMER, precision="fp32", out_dir=tmp_path / "plans", force=True, trt=trt, gpu=ORIN)
    assert PlanManifest.read(manifest_path(adopted.plan)).precision == "fp32"


def test_the_command_adopts_several_plans_and_reports_each(tmp_path, trt, monkeypatch, capsys):
    onnx_dir = write_export(tmp_path / "onnx")
    good = write_plan(onnx_dir / "le_dm.plan", {"blur": ["INPUT", "FLOAT", [-1, 3, -1, -1]],
                                                "cond": ["OUTPUT", "FLOAT", [-1, 16, 256]]}, [{"blur": IMAGE}])
    bad = write_plan(onnx_dir / "restormer.plan", restormer_io(blur="HALF"), [{"blur": IMAGE, "prior": prior()}])
    with cuda_runtime(monkeypatch, "Orin", (8, 7)):
        code = main([str(good), str(bad), "--onnx", str(onnx_dir)])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"{good}: adopted as le_dm (fp16, TensorRT 10.3.0.30, Orin); profiles (1, 256, 256)..(4, 1080, 1920)" in out
    assert "error: " in err and "'blur' is float16, float32 expected" in err
    assert manifest_path(good).exists() and not manifest_path(bad).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_the_command_exits_3(tmp_path, trt, capsys):
    plan = write_plan(tmp_path / DENOISE_STEP / "denoise_step.plan", restormer_io(), [])
    assert main([str(plan), "--precision", "fp16"]) == 3
    assert "TensorRT and a GPU are needed to open the plan" in capsys.readouterr().err
