"""export.trt_build: profiles, trtexec lines, the ONNX export manifest, and build_engines' reuse,
rebuild and failure paths.

Most tests are pure. The build itself needs TensorRT's builder objects, and TensorRT cannot be
installed on this CPU machine, so ``trt_stand_in.fake_tensorrt`` stands in for the ``tensorrt`` /
``tensorrt_rtx`` module: it implements only the calls build_engines makes and encodes what it
was asked into the "plan" bytes so that the tests can check it. TensorRT-RTX builds need no GPU,
so ``flavour="tensorrt_rtx"`` runs the whole build path here; TensorRT proper builds on a GPU, so
its tests (the workspace, the DLA) add ``trt_stand_in.cuda_runtime``, a stand-in for the CUDA
runtime with one GPU. The real builders run on a GPU machine (tests/engines/test_tensorrt_backend.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
from trt_stand_in import TRT_MODULES, cuda_runtime, fake_tensorrt, write_export

from engines.artifacts import ExportManifest, sha256_file
from engines.contracts import DENOISE_STEP, GRAPH_NAMES, LE_DM, RESTORMER, ShapeProfile, graph_contracts
from engines.plan import PlanManifest, PlanRequirements, check_plan, manifest_path
from export.trt_build import (
    DEFAULT_PROFILE,
    DlaRefused,
    _TimingCache,
    build_engines,
    input_profiles,
    parse_profile,
    trtexec_commands,
)

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def onnx_dir(tmp_path: Path) -> Path:
    return write_export(tmp_path / "onnx")


@pytest.fixture
def no_tensorrt(monkeypatch):
    for name in TRT_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes the import fail


@pytest.fixture
def rtx(monkeypatch, no_tensorrt) -> ModuleType:
    trt = fake_tensorrt("tensorrt_rtx", "1.2.0.54")
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", trt)
    return trt


def asked(plan: Path) -> dict:
    data = plan.read_bytes()
    assert data.startswith(b"ftrt")
    return json.loads(data[4:])


# ----------------------------------------------------------------------------- profiles


def test_parse_profile():
    assert parse_profile("1x256x256:1x720x1280:4x1080x1920") == DEFAULT_PROFILE == ShapeProfile()
    assert parse_profile(" 2x512x768 ") == ShapeProfile((2, 512, 768), (2, 512, 768), (2, 512, 768))


@pytest.mark.parametrize("text, words", [
    ("1x256x256:4x1080x1920", "min:opt:max"),
    ("1x256:1x720x1280:4x1080x1920", "'1x256' is not BxHxW"),
    ("1x720x1280:1x256x256:4x1080x1920", "min <= opt <= max"),
    ("0x256x256", "batch >= 1"),
])
def test_parse_profile_errors(text, words):
    with pytest.raises(ValueError, match=words):
        parse_profile(text)


def test_each_graph_gets_its_inputs_ranges():
    contracts = graph_contracts()
    assert input_profiles(contracts[LE_DM], [DEFAULT_PROFILE]) == [
        {"blur": ((1, 3, 256, 256), (1, 3, 720, 1280), (4, 3, 1080, 1920))}]
    assert input_profiles(contracts[RESTORMER], [DEFAULT_PROFILE]) == [{
        "blur": ((1, 3, 256, 256), (1, 3, 720, 1280), (4, 3, 1080, 1920)),
        "prior": ((1, 16, 256), (1, 16, 256), (4, 16, 256)),
    }]
    # The denoiser's inputs do not depend on the image; t is static and gets no range.
    assert input_profiles(contracts[DENOISE_STEP], [DEFAULT_PROFILE]) == [{
        "z": ((1, 16, 256), (1, 16, 256), (4, 16, 256)),
        "cond": ((1, 16, 256), (1, 16, 256), (4, 16, 256)),
    }]


def test_sides_are_padded_and_image_free_duplicates_dropped():
    contracts = graph_contracts(prior_tokens=4, prior_channels=64)
    small, large = parse_profile("1x250x250:1x250x250:1x250x250"), parse_profile("1x1000x1000")
    assert input_profiles(contracts[LE_DM], [small, large]) == [
        {"blur": ((1, 3, 256, 256),) * 3}, {"blur": ((1, 3, 1000, 1000),) * 3}]
    assert input_profiles(contracts[DENOISE_STEP], [small, large]) == [
        {"z": ((1, 4, 64),) * 3, "cond": ((1, 4, 64),) * 3}]


# ----------------------------------------------------------------------------- trtexec


def test_trtexec_lines_for_the_default_profile(onnx_dir, tmp_path):
    out = tmp_path / "plans"
    lines = trtexec_commands(onnx_dir, out, [DEFAULT_PROFILE])
    tail = f"--stronglyTyped --builderOptimizationLevel=3 --timingCacheFile={out}/timing.cache --skipInference"
    assert lines == [
        f"trtexec --onnx={onnx_dir}/le_dm.onnx --saveEngine={out}/le_dm.plan --minShapes=blur:1x3x256x256 "
        f"--optShapes=blur:1x3x720x1280 --maxShapes=blur:4x3x1080x1920 {tail}",
        f"trtexec --onnx={onnx_dir}/denoise_step.onnx --saveEngine={out}/denoise_step.plan "
        "--minShapes=z:1x16x256,cond:1x16x256 --optShapes=z:1x16x256,cond:1x16x256 "
        f"--maxShapes=z:4x16x256,cond:4x16x256 {tail}",
        f"trtexec --onnx={onnx_dir}/restormer.onnx --saveEngine={out}/restormer.plan "
        "--minShapes=blur:1x3x256x256,prior:1x16x256 --optShapes=blur:1x3x720x1280,prior:1x16x256 "
        f"--maxShapes=blur:4x3x1080x1920,prior:4x16x256 {tail}",
    ]


def test_trtexec_lines_with_two_profiles_a_workspace_and_a_cache(onnx_dir, tmp_path):
    static = parse_profile("1x720x1280")
    [line] = trtexec_commands(onnx_dir, tmp_path / "p", [DEFAULT_PROFILE, static], graphs=[LE_DM], opt_level=5,
                              workspace_gib=2.5, timing_cache=tmp_path / "my cache.bin")
    assert line == (
        f"trtexec --onnx={onnx_dir}/le_dm.onnx --saveEngine={tmp_path}/p/le_dm.plan "
        "--minShapes=blur:1x3x256x256 --optShapes=blur:1x3x720x1280 --maxShapes=blur:4x3x1080x1920 "
        "--minShapes=blur:1x3x720x1280 --optShapes=blur:1x3x720x1280 --maxShapes=blur:1x3x720x1280 "
        f"--stronglyTyped --builderOptimizationLevel=5 --memPoolSize=workspace:2560 "
        f"'--timingCacheFile={tmp_path}/my cache.bin' --skipInference"
    )


# ----------------------------------------------------------------------------- the export manifest


def test_export_manifest_errors(tmp_path, onnx_dir):
    with pytest.raises(FileNotFoundError, match="export the ONNX graphs first"):
        ExportManifest.read(tmp_path / "nowhere")
    assert sorted(ExportManifest.read(onnx_dir).graphs) == sorted(GRAPH_NAMES)
    with pytest.raises(ValueError, match=r"graphs \['unet'\] are not in the export"):
        ExportManifest.read(onnx_dir).select(["le_dm", "unet"])
    (onnx_dir / "manifest.json").write_text('{"graphs": {}}')
    with pytest.raises(ValueError, match="not a valid export manifest"):
        ExportManifest.read(onnx_dir)


# ----------------------------------------------------------------------------- build_engines


def test_without_tensorrt_nothing_is_built_and_nothing_written(onnx_dir, tmp_path, no_tensorrt):
    out = tmp_path / "plans"
    report = build_engines(onnx_dir, out, [DEFAULT_PROFILE], log=lambda line: None)
    assert not report.ok and report.flavour is None
    assert [r.status for r in report.results] == ["not built"] * 3
    assert report.lines()[0].startswith("le_dm: not built: TensorRT is not importable (tensorrt:")
    assert "pip install tensorrt-cu12" in report.results[0].reason
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report on a machine without a GPU")
def test_tensorrt_without_a_gpu_is_not_built(onnx_dir, tmp_path, monkeypatch, no_tensorrt):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("tensorrt", "10.13.0.35"))
    out = tmp_path / "plans"
    report = build_engines(onnx_dir, out, flavour="tensorrt", log=lambda line: None)
    assert (report.flavour, report.trt_version) == ("tensorrt", "10.13.0.35")
    assert all(r.status == "not built" and r.reason.startswith("no CUDA GPU to build on") for r in report.results)
    assert not out.exists()


def test_a_tensorrt_rtx_build_writes_plans_and_manifests(onnx_dir, tmp_path, rtx):
    out, lines = tmp_path / "plans", []
    report = build_engines(onnx_dir, out, [DEFAULT_PROFILE], flavour="auto", log=lines.append)
    assert report.ok and (report.flavour, report.trt_version) == ("tensorrt_rtx", "1.2.0.54")
    assert [(r.graph, r.status) for r in report.results] == [(g, "built") for g in GRAPH_NAMES]

    restormer = asked(out / "restormer.plan")
    assert restormer["flags"] == 1 << 1  # strongly typed
    assert restormer["opt_level"] == 3 and restormer["verbosity"] == "DETAILED" and restormer["pools"] == {}
    assert restormer["profiles"] == [{"blur": [[1, 3, 256, 256], [1, 3, 720, 1280], [4, 3, 1080, 1920]],
                                      "prior": [[1, 16, 256], [1, 16, 256], [4, 16, 256]]}]
    assert list(asked(out / "denoise_step.plan")["profiles"][0]) == ["z", "cond"]
    assert rtx.phases == list(GRAPH_NAMES)  # TensorRT's progress monitor was installed

    manifest = PlanManifest.read(manifest_path(out / "restormer.plan"))
    assert (manifest.flavour, manifest.trt_version, manifest.precision) == ("tensorrt_rtx", "1.2.0.54", "fp16")
    assert manifest.profiles == (DEFAULT_PROFILE,) and manifest.opt_level == 3
    assert manifest.onnx_sha256 == sha256_file(onnx_dir / "restormer.onnx")
    assert manifest.contract == graph_contracts()[RESTORMER].as_dict()
    assert manifest.versions["tensorrt_rtx"] == "1.2.0.54"
    # What the runtime checks before loading the plan passes.
    check_plan(out / "restormer.plan", PlanRequirements(graph=RESTORMER, flavour="tensorrt_rtx",
                                                        trt_version="1.2.0.54", compute_capability=(8, 9)))

    build_log = (out / "build.log").read_text()
    assert "[INFO] building restormer" in build_log and "tactic noise" not in build_log
    assert "--- restormer: built" in build_log
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert "TensorRT-RTX: no timing cache (it does not affect TensorRT-RTX plans)" in lines
    assert not (out / "timing.cache").exists()


def test_matching_plans_are_reused_and_changed_ones_rebuilt_with_the_reason(onnx_dir, tmp_path, rtx):
    out, quiet = tmp_path / "plans", (lambda line: None)
    build_engines(onnx_dir, out, [DEFAULT_PROFILE], flavour="tensorrt_rtx", log=quiet)
    rtx.builds.clear()

    again = build_engines(onnx_dir, out, [DEFAULT_PROFILE], flavour="tensorrt_rtx", log=quiet)
    assert [r.status for r in again.results] == ["reused"] * 3 and rtx.builds == []

    lines = []
    static = parse_profile("1x720x1280")
    changed = build_engines(onnx_dir, out, [DEFAULT_PROFILE, static], graphs=[LE_DM], flavour="tensorrt_rtx",
                            log=lines.append)
    [result] = changed.results
    assert result.status == "built" and result.reason.startswith("profiles changed: profiles [")
    assert any(line.startswith("le_dm: building (profiles changed") for line in lines)
    assert len(asked(out / "le_dm.plan")["profiles"]) == 2

    forced = build_engines(onnx_dir, out, [DEFAULT_PROFILE], graphs=[DENOISE_STEP], flavour="tensorrt_rtx",
                           force=True, log=quiet)
    assert [(r.status, r.reason) for r in forced.results] == [("built", "forced")]


def test_a_damaged_plan_is_rebuilt(onnx_dir, tmp_path, rtx):
    out, quiet = tmp_path / "plans", (lambda line: None)
    build_engines(onnx_dir, out, graphs=[LE_DM], flavour="tensorrt_rtx", log=quiet)
    plan = out / "le_dm.plan"
    plan.write_bytes(plan.read_bytes()[:10])
    [result] = build_engines(onnx_dir, out, graphs=[LE_DM], flavour="tensorrt_rtx", log=quiet).results
    assert result.status == "built" and result.reason.startswith("truncated")
    check_plan(plan, PlanRequirements(graph=LE_DM))


def test_an_onnx_file_changed_behind_its_manifest_fails_without_touching_the_plan(onnx_dir, tmp_path, rtx):
    out, quiet = tmp_path / "plans", (lambda line: None)
    build_engines(onnx_dir, out, graphs=[LE_DM], flavour="tensorrt_rtx", log=quiet)
    before = (out / "le_dm.plan").read_bytes()
    with open(onnx_dir / "le_dm.onnx", "ab") as f:
        f.write(b"\0")
    report = build_engines(onnx_dir, out, graphs=[LE_DM], flavour="tensorrt_rtx", log=quiet)
    assert not report.ok and report.results[0].status == "failed"
    assert "the file changed after the export" in report.results[0].reason
    assert (out / "le_dm.plan").read_bytes() == before


def test_parser_errors_are_all_reported(tmp_path, rtx):
    onnx_dir = write_export(tmp_path / "onnx", bad_op="FancyAttention")
    report = build_engines(onnx_dir, tmp_path / "plans", flavour="tensorrt_rtx", log=lambda line: None)
    statuses = {r.graph: r for r in report.results}
    assert statuses[LE_DM].status == statuses[DENOISE_STEP].status == "built"
    failed = statuses[RESTORMER]
    assert failed.status == "failed" and "the ONNX parser rejected" in failed.reason and "(2 errors)" in failed.reason
    assert "no importer for op FancyAttention" in failed.reason and "while parsing restormer.onnx" in failed.reason
    assert not (tmp_path / "plans" / "restormer.plan").exists()


def test_a_failed_build_writes_no_plan_and_echoes_tensorrts_error(onnx_dir, tmp_path, rtx):
    rtx.fail_graphs.add(RESTORMER)
    lines = []
    report = build_engines(onnx_dir, tmp_path / "plans", flavour="tensorrt_rtx", log=lines.append)
    assert [r.status for r in report.results] == ["built", "built", "failed"]
    assert "TensorRT could not build 'restormer'" in report.results[2].reason
    assert "  TensorRT error: no implementation for a layer of restormer" in lines
    assert not (tmp_path / "plans" / "restormer.plan").exists()
    assert not manifest_path(tmp_path / "plans" / "restormer.plan").exists()


def test_bad_arguments_raise(onnx_dir, tmp_path, rtx):
    with pytest.raises(ValueError, match="not in the export"):
        build_engines(onnx_dir, tmp_path, graphs=["unet"], flavour="tensorrt_rtx")
    with pytest.raises(ValueError, match="optimization levels are 0..5"):
        build_engines(onnx_dir, tmp_path, opt_level=7, flavour="tensorrt_rtx")
    with pytest.raises(ValueError, match="unknown TensorRT flavour"):
        build_engines(onnx_dir, tmp_path, flavour="tensorrt-llm")


# ----------------------------------------------------------------------------- workspace and DLA


@pytest.fixture
def orin(monkeypatch, no_tensorrt) -> ModuleType:
    """TensorRT 10.3 on a Jetson AGX Orin (2 DLA cores), both stand-ins (see the module docstring)."""
    trt = fake_tensorrt("tensorrt", "10.3.0.30", dla_cores=2)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with cuda_runtime(monkeypatch, "Orin", (8, 7)):
        yield trt


def test_the_workspace_limit_reaches_the_builder_and_trtexec(onnx_dir, tmp_path, rtx):
    out = tmp_path / "plans"
    build_engines(onnx_dir, out, graphs=[LE_DM], workspace_gib=1.5, flavour="tensorrt_rtx", log=lambda line: None)
    assert asked(out / "le_dm.plan")["pools"] == {"WORKSPACE": 3 * 2**29}
    [line] = trtexec_commands(onnx_dir, out, graphs=[LE_DM], workspace_gib=1.5)
    assert "--memPoolSize=workspace:1536 " in line
    with pytest.raises(ValueError, match="more than 0 GiB"):
        build_engines(onnx_dir, out, workspace_gib=0, flavour="tensorrt_rtx")


def test_a_dla_build_sets_the_core_and_gpu_fallback_and_records_it(onnx_dir, tmp_path, orin):
    out, quiet = tmp_path / "plans", (lambda line: None)
    report = build_engines(onnx_dir, out, graphs=[RESTORMER], flavour="tensorrt", dla_core=1, log=quiet)
    assert report.ok and (out / "timing.cache").is_file()
    restormer = asked(out / "restormer.plan")
    assert (restormer["device"], restormer["dla_core"], restormer["builder_flags"]) == ("DLA", 1, ["GPU_FALLBACK"])
    assert PlanManifest.read(manifest_path(out / "restormer.plan")).dla_core == 1
    # The same plan for the GPU is another plan: rebuilt, and the reason says why.
    [result] = build_engines(onnx_dir, out, graphs=[RESTORMER], flavour="tensorrt", log=quiet).results
    assert result.status == "built" and result.reason == "device changed: built for DLA core 1, the GPU requested"
    assert asked(out / "restormer.plan")["device"] == "GPU"
    assert PlanManifest.read(manifest_path(out / "restormer.plan")).dla_core is None
    [line] = trtexec_commands(onnx_dir, out, graphs=[RESTORMER], dla_core=1)
    assert "--useDLACore=1 --allowGPUFallback" in line


def test_dla_is_refused_where_it_cannot_run(onnx_dir, tmp_path, orin):
    out = tmp_path / "plans"
    with pytest.raises(DlaRefused, match=r"DLA core 2 requested, but Orin has DLA cores 0\.\.1 only"):
        build_engines(onnx_dir, out, flavour="tensorrt", dla_core=2)
    orin.dla_cores = 0  # a discrete GPU
    with pytest.raises(DlaRefused, match=r"has no DLA cores \(builder.num_DLA_cores = 0\)"):
        build_engines(onnx_dir, out, flavour="tensorrt", dla_core=0)
    orin.dla_cores = 2
    fp32 = write_export(tmp_path / "fp32", precision="fp32")
    with pytest.raises(DlaRefused, match="the DLA runs FP16 and INT8 only"):
        build_engines(fp32, out, flavour="tensorrt", dla_core=0)
    assert not out.exists() and orin.builds == []


# ----------------------------------------------------------------------------- the timing cache


class FakeTimingConfig:
    """Stands in for TensorRT's IBuilderConfig timing-cache calls (TensorRT cannot run here)."""

    def __init__(self):
        self.cache = None

    def create_timing_cache(self, data):
        return SimpleNamespace(data=bytes(data), serialize=lambda: b"tuned:" + bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False
        if cache.data.startswith(b"other-gpu"):
            return False
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


def test_timing_cache_is_loaded_and_saved_back_atomically(tmp_path):
    path = tmp_path / "cache" / "timing.cache"
    path.parent.mkdir()
    path.write_bytes(b"previous")
    cache, config = _TimingCache(path, log=lambda line: None), FakeTimingConfig()
    cache.attach(config)
    assert config.cache.data == b"previous"
    cache.save(config)
    assert path.read_bytes() == b"tuned:previous"
    assert [p.name for p in path.parent.iterdir()] == ["timing.cache"]


def test_a_missing_timing_cache_starts_empty_and_is_created(tmp_path):
    path = tmp_path / "new" / "timing.cache"
    cache, config = _TimingCache(path, log=lambda line: None), FakeTimingConfig()
    cache.attach(config)
    assert config.cache.data == b""
    cache.save(config)
    assert path.read_bytes() == b"tuned:"


def test_a_timing_cache_from_another_gpu_is_replaced_not_fatal(tmp_path):
    path = tmp_path / "timing.cache"
    path.write_bytes(b"other-gpu cache")
    lines = []
    cache, config = _TimingCache(path, log=lines.append), FakeTimingConfig()
    cache.attach(config)
    assert config.cache.data == b""
    assert lines == [f"timing cache {path} was made on another GPU or TensorRT version; starting a new one"]
    second = FakeTimingConfig()
    cache.attach(second)  # the next graph of the same build shares the fresh cache
    assert second.cache is config.cache
