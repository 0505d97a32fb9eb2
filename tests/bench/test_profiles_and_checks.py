"""bench/ort_profile.py, bench/kernel_profile.py and bench/runtime_checks.py: the CPU parts here,
the GPU runs where a GPU is present."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines"))  # the shared tiny export
from engine_artifacts import SHAPE, exported_folder  # noqa: E402

from bench import kernel_profile, ort_profile, runtime_checks  # noqa: E402

gpu = pytest.mark.gpu


def _node(name: str, op: str, dur: int) -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "args": {"op_name": op}}


def test_trace_summary_sums_kernel_time_per_op_type_and_node():
    events = [_node("conv_1", "Conv", 3000), _node("conv_2", "Conv", 1000), _node("add_1", "Add", 2000),
              _node("conv_1", "Conv", 3000), _node("conv_2", "Conv", 1000), _node("add_1", "Add", 2000),
              {"cat": "Node", "name": "conv_1_fence_before", "dur": 999, "args": {"op_name": "Conv"}},
              {"cat": "Session", "name": "model_run", "dur": 20000}]
    summary = ort_profile.summarize_trace(events, runs=2)
    assert summary["total_ms_per_run"] == pytest.approx(6.0)
    assert [(r["op"], r["ms_per_run"], r["nodes_per_run"]) for r in summary["by_op_type"]] == [
        ("Conv", pytest.approx(4.0), 2), ("Add", pytest.approx(2.0), 1)]
    assert summary["by_op_type"][0]["share"] == pytest.approx(4 / 6)
    assert summary["by_node"][0] == {"node": "conv_1", "op": "Conv", "ms_per_run": pytest.approx(3.0)}


def test_ort_profile_runs_an_exported_graph_on_the_cpu(tmp_path, tmp_path_factory, capsys):
    folder = exported_folder(tmp_path_factory.getbasetemp() / "engine_artifacts")
    batch, _, height, width = SHAPE
    code = ort_profile.main([str(folder), "--provider", "cpu", "--size", f"{width}x{height}", "--batch", str(batch),
                             "--runs", "2", "--warmup", "1", "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads((tmp_path / f"ort_profile_restormer_{width}x{height}.json").read_text())
    ops = {row["op"]: row for row in summary["by_op_type"]}
    assert "Conv" in ops and ops["Conv"]["ms_per_run"] > 0
    assert summary["total_ms_per_run"] == pytest.approx(sum(r["ms_per_run"] for r in summary["by_op_type"]))
    assert (tmp_path / summary["trace"]).is_file()
    assert "slowest nodes" in capsys.readouterr().out


def test_ort_profile_refuses_a_folder_without_the_graph(tmp_path, capsys):
    assert ort_profile.main([str(tmp_path), "--provider", "cpu"]) == 2
    assert "restormer.onnx does not exist" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_tools_refuse_to_run_without_cuda(tmp_path, capsys):
    assert runtime_checks.main(["--tiny", "--out", str(tmp_path)]) == 1
    assert kernel_profile.main(["--tiny"]) == 1
    assert "needs a CUDA device" in capsys.readouterr().err


@gpu
def test_runtime_checks_measure_every_figure_on_a_gpu(tmp_path):
    code = runtime_checks.main(["--tiny", "--iterations", "5", "--soak-frames", "40", "--soak-size", "64x48",
                                "--out", str(tmp_path)])
    report = json.loads((tmp_path / "runtime_checks.json").read_text())
    results = report["results"]["torch-fp16"]
    assert code == 0, report
    assert results["overhead"]["engine_gpu_sum_ms"] > 0 and results["overhead"]["deblur_wall_ms"] > 0
    assert results["loop"]["median_ms"] > 0
    assert results["4k"]["tiled"]["torch_peak_allocated_gb"] < results["4k"]["whole"]["torch_peak_allocated_gb"]
    soak = report["results"]["soak"]
    assert soak["returned"] == 40 and set(soak["memory"]) == {"warm", "end"}


@gpu
def test_kernel_profile_lists_the_kernels_of_a_torch_engine(tmp_path, capsys):
    assert kernel_profile.main(["--tiny", "--backend", "torch-fp16-nhwc", "--size", "64x48", "--runs", "1",
                                "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Self CUDA" in out and "| **all kernels** |" in out
    assert list(tmp_path.glob("kernels_*.txt")) and list(tmp_path.glob("trace_*.json"))
    (saved,) = tmp_path.glob("kernels_*.txt")
    assert kernel_profile.summarize(saved) == next(tmp_path.glob("kinds_*.md")).read_text()


# A table kernel_profile.py saved on an H100 (2026-11-27, the compiled FP16 Restormer with the fused
# GDFN kernel at 1280x720; its 60 largest rows).
H100_TABLE = Path(__file__).resolve().parent / "data" / "kernel_profile_h100_1280x720.txt"


def test_kernel_rows_are_the_kernels_not_the_operators_that_launch_them():
    rows = kernel_profile.kernel_rows(H100_TABLE.read_text())
    names = [row.name for row in rows]
    assert "_gated_dwconv3x3_kernel" in names  # the kernel ...
    assert not any(name.startswith(("aten::", "_gated_dwconv3x3_kernel_", "Torch-Compiled", "##")) for name in names)
    assert len(names) == len(set(names))  # ... once, not again under its launcher's row
    gdfn = next(row for row in rows if row.name == "_gated_dwconv3x3_kernel")
    assert gdfn.self_device_ms == pytest.approx(22.118) and gdfn.calls == 76


def test_kinds_of_a_saved_table_add_up_per_run(capsys):
    assert kernel_profile.main(["--summarize", str(H100_TABLE)]) == 0
    table = capsys.readouterr().out
    assert "| fused GDFN kernel (Triton) | 1 | 38 | 11.06 |" in table
    assert "| **all kernels** | 32 | 277 | **41.89** |" in table
    shares = [float(line.split("|")[-2].strip(" %")) for line in table.splitlines()
              if line.startswith("| ") and "%" in line and "all kernels" not in line]
    assert sum(shares) == pytest.approx(100, abs=0.3)


@pytest.mark.parametrize("name, kind", [
    ("nvjet_sm90_hsh_128x256_64x4_2x1_v_bz_coopA_TNN", "matrix products (cuBLAS, CUTLASS)"),
    ("sm90_xmma_depthwise_convolution_fprop_tiling_f16f16_f32f32_f32_nhwckrsc_nhwc", "depthwise convolutions (cuDNN)"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7", "attention"),
    ("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc", "other convolutions (cuDNN)"),
    ("triton_per_fused_add_bmm_native_layer_norm_permute_transpose_view_77",
     "inductor's generated kernels (norms, activations, residuals)"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>",
     "PyTorch's elementwise kernels and copies"),
    ("some_vendor_kernel", "other"),
    ("gated_dwconv3x3_kernel", "fused GDFN kernel (Triton)"),
    ("_gated_dwconv3x3_kernel", "fused GDFN kernel (Triton)"),  # as tables saved before the kernels were public
    ("norm_matmul_tma_kernel", "LayerNorm + projection kernel (Triton)"),
    ("matmul_residual_kernel", "projection + residual kernel (Triton)"),
    ("prior_attention_kernel", "HIM prior attention kernel (Triton)"),
    ("head_gram_kernel", "MDTA q k^T per head (Triton)"),
])
def test_kernel_kinds_by_name(name, kind):
    assert kernel_profile.kernel_kind(name) == kind


def test_summarize_refuses_what_is_not_a_saved_table(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("torch-fp16 restormer 64x48, 1 runs, GPU\nno table here\n")
    with pytest.raises(ValueError, match="no profiler table header"):
        kernel_profile.summarize(text)
    with pytest.raises(SystemExit):
        kernel_profile.main(["--summarize", str(tmp_path / "missing.txt")])
    with torch.profiler.profile() as prof:  # a real profile with no device column
        torch.randn(8, 8) @ torch.randn(8, 8)
    with pytest.raises(ValueError, match="no device-time column"):
        kernel_profile.kernel_rows(prof.key_averages().table(row_limit=-1))
