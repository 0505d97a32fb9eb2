"""export/build_engines.py as a user runs it: what a run writes (graphs, manifest, report), the
engine step where TensorRT is missing or expected, bad input (exit 2, one line, nothing written),
--help without the optional packages, --version, and the refusals (int8/fp8, DLA).

The two full runs are the session's (tests/export/export_runs.py); bad-input cases call ``main``
in-process because they stop before anything is exported. TensorRT and a GPU cannot run here:
the DLA and "TensorRT installed" cases use the stand-ins of tests/export/trt_stand_in.py.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from export_runs import REPO, ExportRuns, export_runs, export_test_config, installed_env, make_model
from trt_stand_in import TRT_MODULES, cuda_runtime, fake_tensorrt, write_export

from engines.contracts import GRAPH_NAMES, Precision, graph_contracts
from engines.version import project_version
from export.build_engines import (
    EXIT_BAD_INPUT,
    EXIT_NO_ENGINES,
    EXIT_OK,
    REFUSED_PRECISIONS,
    EngineOptions,
    build_trt_engines,
    main,
    package_shapes,
)
from export.model_source import ModelSource

EXPORT_FILES = {"le_dm.onnx", "denoise_step.onnx", "restormer.onnx", "manifest.json", "export_report.json"}
# What export.trt_build may add beside them where TensorRT runs.
ENGINE_FILES = {"timing.cache", "build.log"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> ExportRuns:
    return export_runs(tmp_path_factory.getbasetemp() / "export_runs")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export_files(out_dir: Path) -> set[str]:
    return {p.name for p in out_dir.iterdir() if not p.name.endswith((".plan", ".plan.json")) and p.name not in ENGINE_FILES}


# ------------------------------------------------------------------------------------ a full run


@pytest.mark.slow
def test_fp32_run_writes_the_export_and_its_manifest(runs: ExportRuns) -> None:
    run = runs.fp32
    assert run.returncode == 0, run.stderr[-3000:]
    assert _export_files(run.out_dir) == EXPORT_FILES  # no staging folder or temporary file left
    manifest = json.loads((run.out_dir / "manifest.json").read_text())
    model = runs.model()
    assert manifest["precision"] == "fp32"
    assert manifest["model"]["config"] == json.loads(json.dumps(export_test_config().to_dict()))
    assert (manifest["model"]["prior_tokens"], manifest["model"]["prior_channels"]) == model.prior_shape == (4, 32)
    assert manifest["model"]["source"]["kind"] == "weights"
    assert manifest["model"]["source"]["files"]["weights"]["sha256"] == _sha256(runs.weights)
    contracts = graph_contracts(*model.prior_shape)
    assert set(manifest["graphs"]) == set(GRAPH_NAMES)
    for name, entry in manifest["graphs"].items():
        assert entry["file"] == f"{name}.onnx"
        assert entry["sha256"] == _sha256(run.out_dir / entry["file"])
        assert entry["contract"] == json.loads(json.dumps(contracts[name].as_dict()))
        assert entry["parameters"] > 0 and entry["op_counts"]["MatMul"] > 0
    # Every weight of the Restormer is in its graph (plus nothing the size of a second copy).
    restormer_params = model.num_parameters("restormer")
    assert restormer_params <= manifest["graphs"]["restormer"]["parameters"] < 1.1 * restormer_params
    schedule = manifest["schedule"]
    assert schedule["T"] == 8 and schedule["variant"] == "gopro"
    assert schedule["tables"]["posterior_mean_coef1"] == pytest.approx(model.schedule.posterior_mean_coef1.tolist())
    for library in ("torch", "onnx", "onnxscript", "onnxruntime", "exporter"):
        assert manifest["versions"][library]
    verification = manifest["verification"]
    assert verification["skipped"] == "" and len(verification["comparisons"]) >= 11
    assert all(c["ok"] and c["max_abs_error"] <= 1e-4 for c in verification["comparisons"])


@pytest.mark.slow
def test_fp32_run_prints_and_writes_the_node_report(runs: ExportRuns) -> None:
    run = runs.fp32
    assert run.returncode == 0, run.stderr[-3000:]
    for text in ("le_dm", "denoise_step", "restormer", "parameters", "LayerNormalization", "transposes on image tensors"):
        assert text in run.stdout
    report = json.loads((run.out_dir / "export_report.json").read_text())
    restormer = report["graphs"]["restormer"]
    assert restormer["op_counts"]["LayerNormalization"] == restormer["layer_norms"] > 0
    assert restormer["decomposed_layer_norms"] == 0 and restormer["unfolded_constants"] == 0
    assert restormer["transposes"]["total"] >= restormer["transposes"]["on_image_tensors"]


@pytest.mark.slow
def test_engine_step_reports_what_it_could_not_build(runs: ExportRuns) -> None:
    """Without --no-engines the run goes on to TensorRT; where TensorRT or a GPU is missing it names
    the engines it did not build and why, prints the trtexec lines, and still exits 0."""
    run = runs.fp32
    assert run.returncode == 0, run.stderr[-3000:]
    assert "engines:" in run.stdout
    if "not built" in run.stdout:
        for name in GRAPH_NAMES:
            assert f"{name}: not built" in run.stdout
        assert run.stdout.count("trtexec --onnx=") == len(GRAPH_NAMES)
        assert not list(run.out_dir.glob("*.plan"))


@pytest.mark.slow
def test_fp16_run_writes_a_verified_fp16_export(runs: ExportRuns) -> None:
    run = runs.fp16
    assert run.returncode == 0, run.stderr[-3000:]
    assert _export_files(run.out_dir) == EXPORT_FILES
    assert "engines:" not in run.stdout  # --no-engines
    manifest = json.loads((run.out_dir / "manifest.json").read_text())
    assert manifest["precision"] == "fp16"
    for name in GRAPH_NAMES:
        islands = manifest["graphs"][name]["float32_islands"]
        assert islands["violations"] == [] and islands["statistics"]["LayerNormalization"] > 0
    verification = manifest["verification"]
    if verification["skipped"]:
        assert "ONNX Runtime" in verification["skipped"]
    else:
        assert all(c["ok"] for c in verification["comparisons"])


@pytest.mark.slow
def test_existing_export_is_kept_without_force(runs: ExportRuns, capsys: pytest.CaptureFixture) -> None:
    out_dir = runs.fp16.out_dir
    before = {p.name: _sha256(p) for p in out_dir.iterdir()}
    code = main(["--weights", str(runs.weights), "--precision", "fp16", "--no-engines", "--no-aoti", "--out", str(out_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "already holds an export" in err[0] and "--force" in err[0]
    assert {p.name: _sha256(p) for p in out_dir.iterdir()} == before


# ------------------------------------------------------------------------------------ bad input


@pytest.fixture
def official_files(tmp_path: Path) -> dict[str, Path]:
    """The test model as the official release stores it: three .pth files with ``params``."""
    model = make_model()
    files = {}
    for flag, part in (("net_g", model.restormer), ("net_le_dm", model.le_dm), ("net_d", model.denoiser)):
        files[flag] = tmp_path / f"{flag}.pth"
        torch.save({"params": part.state_dict()}, files[flag])
    return files


def _official_options(config_changes: dict | None = None) -> dict:
    """An official option file's network sections for the test model."""
    c = export_test_config()
    g = c.network_g
    options = {
        "network_g": {"type": "Transformer", "dim": g.dim, "num_blocks": list(g.num_blocks), "group": g.group,
                      "num_refinement_blocks": g.num_refinement_blocks, "heads": list(g.heads), "embed_dim": g.embed_dim},
        "network_le_dm": {"type": "latent_encoder_gelu", "embed_dim": 8, "block_num": 1, "group": g.group},
        "network_d": {"type": "denoising", "in_channel": 32, "out_channel": 32, "inner_channel": 32, "block_num": 3,
                      "group": g.group},
    }
    for section, values in (config_changes or {}).items():
        options[section].update(values)
    return options


def test_official_files_with_their_options_load(official_files: dict[str, Path], tmp_path: Path) -> None:
    options = tmp_path / "options.yml"
    options.write_text(yaml.safe_dump(_official_options()))
    source = ModelSource.from_options(official_files["net_g"], official_files["net_le_dm"], official_files["net_d"], options)
    loaded = source.load()
    want = make_model().state_dict()
    assert all(torch.equal(loaded.state_dict()[k], want[k]) for k in loaded.restormer.state_dict() if k in want)
    assert loaded.config.network_g == export_test_config().network_g
    assert set(source.describe()["files"]) == {"net_g", "net_le_dm", "net_d", "options"}


def _bad_input_cases(tmp_path: Path, files: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    """name -> (model/output arguments, text the one-line error must contain)."""
    unknown = tmp_path / "unknown_keys.yml"
    unknown.write_text(yaml.safe_dump(_official_options({"network_g": {"num_layers": 3}})))
    official = ["--net-g", str(files["net_g"]), "--net-le-dm", str(files["net_le_dm"]), "--net-d", str(files["net_d"])]
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    weights = tmp_path / "weights.safetensors"
    make_model().save(weights)
    return {
        "missing weights": (["--weights", str(tmp_path / "missing.safetensors")], "no such file"),
        "missing official file": ([*official[:4], "--net-d", str(tmp_path / "missing.pth")], "no such file"),
        "incomplete official files": (official[:4], "missing --net-d"),
        "checkpoint does not fit the options": (official, "does not fit the network configuration"),
        "options with unknown keys": ([*official, "--options", str(unknown)], "unknown keys ['num_layers']"),
        "weights that are not a checkpoint": (["--weights", str(a_file)], "not a readable safetensors file"),
        "output below a file": (["--weights", str(weights), "--out", str(a_file / "onnx")], "is not a folder"),
        "output is a file": (["--weights", str(weights), "--out", str(a_file)], "is not a folder"),
        "malformed profile": (["--weights", str(weights), "--profile", "1x256:1x720x1280"], "--profile"),
    }


@pytest.mark.parametrize("case", ["missing weights", "missing official file", "incomplete official files",
                                  "checkpoint does not fit the options", "options with unknown keys",
                                  "weights that are not a checkpoint", "output below a file", "output is a file",
                                  "malformed profile"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case: str, official_files: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    args, expected = _bad_input_cases(tmp_path, official_files)[case]
    out_dir = tmp_path / "out" / "onnx"
    if "--out" not in args:
        args = [*args, "--out", str(out_dir)]
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main([*args, "--precision", "fp32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # "out" was never created


@pytest.mark.slow
def test_fresh_cpu_machine_exports_the_embedded_model_and_prints_trtexec_lines(tmp_path: Path) -> None:
    """Issue 5: ``python export/build_engines.py`` with no model options and no TensorRT exits 0 with
    the three graphs, the manifest, and the trtexec lines to build the engines elsewhere."""
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "artifacts"
    # --no-compare: the ONNX Runtime-PyTorch comparison at 1 x 720 x 1280 would add minutes on a CPU
    # (tests/export/test_compare.py checks it on the small model's export); --no-aoti: the packages
    # are tests/export/test_aoti_package.py's.
    done = subprocess.run([sys.executable, "export/build_engines.py", "--precision", "fp16", "--no-compare",
                           "--no-aoti", "--out", str(out)],
                          cwd=repo, capture_output=True, text=True, timeout=900, env=installed_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"le_dm.onnx", "denoise_step.onnx", "restormer.onnx", "manifest.json"} <= {p.name for p in out.iterdir()}
    trtexec = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("trtexec --onnx=")]
    assert len(trtexec) == 3 and all("--stronglyTyped" in line for line in trtexec)
    assert done.stdout.count("not built") >= 3


# ------------------------------------------------------------------------------------ without optional packages

OPTIONAL = ("onnx", "onnxscript", "onnxruntime", "polygraphy", *TRT_MODULES)


def _run_blocked(tmp_path: Path, *command: str) -> subprocess.CompletedProcess:
    """``command`` in a fresh interpreter where importing any of OPTIONAL fails (a sitecustomize
    puts None into sys.modules for them), with the repository importable as an install makes it."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({OPTIONAL!r}))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run([sys.executable, *command], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_help_works_without_onnx_onnxruntime_or_tensorrt(tmp_path: Path) -> None:
    probe = _run_blocked(tmp_path, "-c", "import onnx")
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr  # the block works
    for command in ([str(REPO / "export" / "build_engines.py"), "--help"], ["-m", "export.build_engines", "--help"]):
        done = _run_blocked(tmp_path, *command)
        assert done.returncode == 0, done.stderr[-2000:]
        for flag in ("--workspace", "--dla-core", "--require-tensorrt", "--version", "--no-compare"):
            assert flag in done.stdout


def test_export_without_onnx_exits_2_naming_what_to_install(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    make_model().save(weights)
    done = _run_blocked(tmp_path, str(REPO / "export" / "build_engines.py"), "--weights", str(weights),
                        "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "the ONNX export needs onnx, onnxscript, onnxruntime, which are not installed" in done.stderr
    assert "pip install -e '.[onnx]'" in done.stderr and "'.[jetson]'" in done.stderr
    assert not (tmp_path / "out").exists()


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"hidiff-build-engines (hidiff-deploy) {project_version()}"


# ------------------------------------------------------------------------------------ refusals


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    make_model().save(path)
    return path


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_8_bit_precisions_are_refused_with_the_measured_reason(precision: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    code = main(["--precision", precision, "--out", str(tmp_path / "out")])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_BAD_INPUT and line == f"error: --precision {precision}: {REFUSED_PRECISIONS[precision]}"
    assert "dB" in line and "python -m bench.int8_accuracy" in line  # the measurement and how to repeat it
    assert not (tmp_path / "out").exists()


def test_dla_core_is_refused_on_a_gpu_without_dla(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    for name in TRT_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("tensorrt", "10.13.0.35", dla_cores=0))
    out = tmp_path / "out"
    with cuda_runtime(monkeypatch, "NVIDIA H100 80GB HBM3", (9, 0)):
        code = main(["--weights", str(weights), "--dla-core", "0", "--out", str(out)])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_BAD_INPUT, line
    assert line.startswith("error: --dla-core 0: NVIDIA H100 80GB HBM3 has no DLA cores (TensorRT's "
                           "builder.num_DLA_cores = 0)") and "Leave out --dla-core" in line
    assert not out.exists()


def test_dla_core_needs_fp16_graphs(weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--weights", str(weights), "--dla-core", "0", "--precision", "fp32", "--out", str(tmp_path / "o")])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_BAD_INPUT and "the DLA runs FP16 and INT8 only" in line and "--precision fp16" in line


# ------------------------------------------------------------------------------------ TensorRT expected


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TRT_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


def test_without_tensorrt_the_engine_step_prints_trtexec_and_adoption_and_exits_0(
        tmp_path: Path, no_tensorrt: None, capsys: pytest.CaptureFixture) -> None:
    onnx_dir = write_export(tmp_path / "onnx")
    status, report = build_trt_engines(onnx_dir, EngineOptions((), 3, "auto", False, workspace_gib=2.0))
    out = capsys.readouterr().out
    assert status == EXIT_OK and [r.status for r in report.results] == ["not built"] * 3
    assert out.count("trtexec --onnx=") == 3 and out.count("--memPoolSize=workspace:2048") == 3
    assert f"python -m export.adopt_plan {onnx_dir}/GRAPH.plan --onnx {onnx_dir}" in out


def test_require_tensorrt_exits_3_with_the_reason(tmp_path: Path, no_tensorrt: None,
                                                 capsys: pytest.CaptureFixture) -> None:
    onnx_dir = write_export(tmp_path / "onnx")
    status, _ = build_trt_engines(onnx_dir, EngineOptions((), 3, "auto", False, require_tensorrt=True))
    [line] = capsys.readouterr().err.strip().splitlines()
    assert status == EXIT_NO_ENGINES
    assert line.startswith("error: no TensorRT plan was built although --require-tensorrt was given: "
                           "TensorRT is not importable")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_an_installed_tensorrt_that_cannot_build_exits_3(tmp_path: Path, no_tensorrt: None,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("tensorrt", "10.13.0.35"))
    onnx_dir = write_export(tmp_path / "onnx")
    status, _ = build_trt_engines(onnx_dir, EngineOptions((), 3, "tensorrt", False))
    [line] = capsys.readouterr().err.strip().splitlines()
    assert status == EXIT_NO_ENGINES
    assert line.startswith("error: no TensorRT plan was built although a TensorRT module is installed: "
                           "no CUDA GPU to build on")


def test_the_cuda_packages_of_their_own_are_the_profiles_optimum_shapes() -> None:
    assert package_shapes([]) == [(1, 720, 1280)]  # the default profile's
    assert package_shapes(["1x256x256:2x1078x1918:4x1080x1920", "1x720x1280"]) == [(1, 720, 1280), (2, 1080, 1920)]


def test_cuda_packages_say_why_they_go_without_the_fused_kernels() -> None:
    from export.aoti_package import cuda_kernels_reason

    assert "float32" in cuda_kernels_reason(Precision.FP32)
    fp16 = cuda_kernels_reason(Precision.FP16)
    assert (fp16 is None) == (importlib.util.find_spec("triton") is not None), fp16
