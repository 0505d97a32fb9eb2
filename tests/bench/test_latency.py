"""bench/latency.py end to end on the CPU with a tiny model, and its settings and trtexec lines.

The whole CLI runs once per module (tiny model, 32x32, 0.2 s per case, one torch thread) and the
tests read its JSON, markdown and plot. ONNX Runtime on the CPU is measured on the graphs the
export tests export once per session, when they run in the same session."""
from __future__ import annotations

import contextlib
import io
import json
import math
import sys

import pytest

# A test dependency ([dev]); the lent GPU machines lack it, and their GPU tests must still collect.
jsonschema = pytest.importorskip("jsonschema")

from bench import latency, report  # noqa: E402 (after the importorskip above)
from bench.inputs import ImageSize  # noqa: E402
from bench.latency import LatencySettings, trtexec_lines  # noqa: E402
from bench.timing import NETWORK_STAGES, STAGES  # noqa: E402

FAST = ["--device", "cpu", "--sizes", "32x32", "--batches", "1", "--duration", "0.2", "--min-iters", "2",
        "--warmup-ms", "20", "--threads", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One CLI run: (exit code, report dict, output folder, stdout)."""
    out = tmp_path_factory.mktemp("latency")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = latency.main(["--tiny", *FAST, "--backends", "tensorrt,torch-fp32", "--out", str(out)])
    return code, json.loads((out / "latency.json").read_text()), out, stdout.getvalue()


def test_run_writes_valid_json_markdown_and_plot(run):
    code, data, out, _ = run
    assert code == 0
    jsonschema.validate(data, json.loads(latency.SCHEMA_PATH.read_text()))
    assert (out / "latency.md").read_text().startswith("# HI-Diff latency")
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["complete"] is True
    assert data["settings"]["timer"] == "perf_counter"
    assert data["settings"]["model"]["prior_shape"] == [16, 32]


def test_missing_backend_is_skipped_with_its_reason(run):
    _, data, _, stdout = run
    skipped = {item["backend"]: item["reason"] for item in data["skipped"]}
    assert "cuda" in skipped["tensorrt"]
    assert [r["backend"] for r in data["results"]] == ["torch-fp32"]
    assert "skipped tensorrt" in stdout


def test_statistics_are_consistent(run):
    _, data, _, _ = run
    result = data["results"][0]
    assert result["status"] == "ok"
    assert result["iterations"] >= 2
    assert result["throughput_fps"] > 0
    assert result["cold_ms"] > 0
    for name, stats in result["metrics"].items():
        assert report.stats_are_ordered(stats), (name, stats)
    m = result["metrics"]
    # Host Latency is the sum of the stages in every iteration, so the means add up too.
    stage_sum = sum(m[s]["mean"] for s in STAGES)
    assert math.isclose(m["Host Latency"]["mean"], stage_sum, rel_tol=1e-9)
    network_sum = sum(m[s]["mean"] for s in NETWORK_STAGES)
    assert math.isclose(m["GPU Compute Time"]["mean"], network_sum, rel_tol=1e-9)
    assert m["Wall Latency"]["min"] >= m["Host Latency"]["min"] * 0.99


def test_reference_against_itself_is_exact(run):
    _, data, _, _ = run
    result = data["results"][0]
    assert result["accuracy"] == {"reference": "torch-fp32", "psnr_db": None, "max_abs_error": 0.0, "exact": True}
    assert result["speedup_vs_reference"] == pytest.approx(1.0)


def test_table_is_printed_last(run):
    _, _, out, stdout = run
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("HI-Diff latency on")
    assert any(line.startswith("torch-fp32  32x32") for line in lines)
    assert lines[-1].startswith("skipped tensorrt")
    assert "torch-fp32" in (out / "latency.md").read_text()


def test_partial_report_says_so(run):
    _, data, _, _ = run
    partial = {**data, "complete": False}
    assert "partial" in report.markdown(partial)
    assert report.format_table(partial).splitlines()[-1].startswith("PARTIAL")


def test_schema_rejects_a_report_without_a_percentile(run):
    _, data, _, _ = run
    broken = json.loads(json.dumps(data))
    del broken["results"][0]["metrics"]["Host Latency"]["p99"]
    with pytest.raises(ValueError, match="Host Latency"):
        report.validate_report(broken)


@pytest.mark.xdist_group("shared_builds")  # the worker that makes the shared export (tests/conftest.py)
def test_onnxruntime_cpu_matches_torch(tmp_path, tmp_path_factory):
    """ONNX Runtime on the CPU, on the graphs the export tests export once per session
    (tests/export/export_runs.py): exporting costs minutes on two cores, so it is shared, and this
    test runs when the export tests are part of the session."""
    shared = sys.modules.get("export_runs")
    if shared is None:
        pytest.skip("needs the export tests' shared export (tests/export/export_runs.py): run with tests/export")
    runs = shared.export_runs(tmp_path_factory.getbasetemp() / "export_runs")
    if runs.fp32.returncode != 0:
        pytest.skip(f"the shared fp32 export failed (tests/export reports why): {runs.fp32.stderr[-300:]}")
    out = tmp_path / "out"
    code = latency.main([*FAST, "--weights", str(runs.weights), "--backends", "onnxruntime-cpu",
                         "--onnx", str(runs.fp32.out_dir), "--out", str(out)])
    assert code == 0
    data = json.loads((out / "latency.json").read_text())
    jsonschema.validate(data, json.loads(latency.SCHEMA_PATH.read_text()))
    ort = [r for r in data["results"] if r["backend"] == "onnxruntime-cpu"]
    assert ort, data["skipped"]
    assert ort[0]["status"] == "ok" and ort[0]["precision"] == "fp32" and ort[0]["engine_backend"] == "onnxruntime-cpu"
    # Same graphs, same z_T, same input: float32 ONNX Runtime agrees with eager PyTorch to rounding.
    assert ort[0]["accuracy"]["max_abs_error"] < 1e-4
    assert ort[0]["accuracy"]["psnr_db"] is None or ort[0]["accuracy"]["psnr_db"] > 80

    # Graphs of another model than the reference's are refused, not compared.
    other = tmp_path / "other"
    assert latency.main(["--tiny", *FAST, "--backends", "onnxruntime-cpu", "--onnx", str(runs.fp32.out_dir),
                         "--out", str(other)]) == 0
    skipped = {i["backend"]: i["reason"] for i in json.loads((other / "latency.json").read_text())["skipped"]}
    assert "another" in skipped["onnxruntime-cpu"]


def test_trtexec_lines_use_padded_shapes(tmp_path):
    size = ImageSize(1918, 1078)  # padded to 1080 x 1920
    settings = LatencySettings(sizes=(size,), batches=(4,), backends=("torch-fp32",))
    lines = trtexec_lines(tmp_path, size, 4, (16, 256), settings, tmp_path / "t.bin")
    assert lines[0] == (f"trtexec --loadEngine={tmp_path / 'le_dm.plan'} --shapes=blur:4x3x1080x1920 "
                        "--warmUp=200 --duration=3 --iterations=10")
    assert "--shapes=z:4x16x256,cond:4x16x256,t:1 --loadInputs=t:" in lines[1]
    assert "--shapes=blur:4x3x1080x1920,prior:4x16x256" in lines[2]


def test_the_torch_columns_are_presets_or_presets_with_a_field_changed():
    from bench.backends import BENCH_BACKENDS
    from engines.torch_settings import PRESETS, TorchSettings

    torch_columns = {n: b.torch_settings for n, b in BENCH_BACKENDS.items() if b.engine_backend == "torch"}
    assert all(isinstance(s, TorchSettings) for s in torch_columns.values())
    assert torch_columns["torch-compile-fp16-fused-norms-graphs"] is PRESETS["fastest"]
    assert torch_columns["torch-fp32"] is PRESETS["eager"] and torch_columns["torch-fp16-nhwc"] is PRESETS["channels-last"]
    assert torch_columns["torch-compile-fp16-unaligned"] == PRESETS["compiled"].replace(pad_channels=False)
    assert BENCH_BACKENDS["torch-fp16"].runtime_backend() == ("torch", {"torch_settings": PRESETS["eager"]})
    assert BENCH_BACKENDS["onnxruntime-cuda-nhwc"].runtime_backend() == (
        "onnxruntime", {"engine_options": {"provider": "cuda", "provider_options": {"prefer_nhwc": "1"}}})


def test_settings_refuse_bad_values():
    size = (ImageSize(32, 32),)
    with pytest.raises(ValueError, match="unknown backends"):
        LatencySettings(sizes=size, batches=(1,), backends=("torch-fp32", "tensorflow"))
    with pytest.raises(ValueError, match="reference"):
        LatencySettings(sizes=size, batches=(1,), backends=("torch-fp16",))
    with pytest.raises(ValueError, match="batches"):
        LatencySettings(sizes=size, batches=(0,), backends=("torch-fp32",))


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert latency.main(["--tiny", *FAST, "--sizes", "32xab", "--out", str(tmp_path)]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert latency.main(["--weights", str(tmp_path / "missing.safetensors"), "--device", "cpu", "--out", str(tmp_path)]) == 2
