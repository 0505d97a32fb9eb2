"""export.compare: Polygraphy's Comparator over ONNX Runtime and the PyTorch graphs (TensorRT cannot
run here; its runner is Polygraphy's own TrtRunner).

The fast tests run the runners on a two-node ONNX graph; the slow ones compare the export tests'
shared fp32 export (tests/export/export_runs.py), whose command run already wrote its comparisons.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from export_runs import ExportRuns, export_runs, make_model
from onnx import TensorProto, helper

from engines.contracts import GRAPH_NAMES, LE_DM, graph_contracts
from export.compare import ONNXRUNTIME, PYTORCH, compare_export, compare_runners, onnxruntime_runner, torch_runner
from export.trt_build import parse_profile
from hidiff.model import HIDiff

pytest.importorskip("polygraphy")
CONTRACT = graph_contracts(4, 32)[LE_DM]  # blur (B, 3, H, W) -> cond (B, 4, 32)


class Doubler(torch.nn.Module):
    """What the ONNX graph below computes, plus ``offset``."""

    def __init__(self, offset: float = 0.0):
        super().__init__()
        self.offset = offset

    def forward(self, blur: torch.Tensor) -> torch.Tensor:
        return 2.0 * blur + self.offset


@pytest.fixture
def doubler_onnx(tmp_path: Path) -> Path:
    """cond = blur * 2 (shapes are the runners' business, not the contract's, here)."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["blur", "two"], ["cond"])], "doubler",
                              [helper.make_tensor_value_info("blur", TensorProto.FLOAT, ["b", 3, "h", "w"])],
                              [helper.make_tensor_value_info("cond", TensorProto.FLOAT, ["b", 3, "h", "w"])], [two])
    path = tmp_path / "doubler.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def feeds() -> dict[str, np.ndarray]:
    return {"blur": np.random.default_rng(0).random((1, 3, 16, 24), dtype=np.float32)}


def test_matching_runners_agree_and_report_polygraphys_statistics(doubler_onnx: Path) -> None:
    bound, stats = compare_runners(onnxruntime_runner(doubler_onnx), torch_runner(Doubler(), CONTRACT), feeds(),
                                   lambda outputs: 1e-4)
    assert bound == 1e-4 and list(stats) == ["cond"]
    assert stats["cond"]["max_abs"] <= 1e-6 and stats["cond"]["mean_abs"] <= stats["cond"]["max_abs"]


def test_a_drifting_runner_is_measured(doubler_onnx: Path) -> None:
    # The bound is computed from the first runner's outputs: 1e-2 x max|2 x blur| here.
    _, stats = compare_runners(onnxruntime_runner(doubler_onnx), torch_runner(Doubler(0.05), CONTRACT), feeds(),
                               lambda outputs: 1e-2 * float(np.abs(outputs["cond"]).max()))
    assert stats["cond"]["max_abs"] == pytest.approx(0.05, rel=1e-5)
    assert stats["cond"]["mean_abs"] == pytest.approx(0.05, rel=1e-5)


# ------------------------------------------------------------------------------------ the shared export


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> ExportRuns:
    return export_runs(tmp_path_factory.getbasetemp() / "export_runs")


@pytest.mark.slow
def test_the_build_command_wrote_its_comparisons_into_the_report(runs: ExportRuns) -> None:
    """Without TensorRT the command compares ONNX Runtime with the PyTorch graphs at the default
    profile's optimum shape (1 x 720 x 1280) and writes it beside the node report."""
    assert runs.fp32.returncode == 0, runs.fp32.stderr[-3000:]
    report = json.loads((runs.fp32.out_dir / "export_report.json").read_text())
    comparisons = report["comparisons"]
    assert comparisons["ok"] and comparisons["precision"] == "fp32"
    assert [c["graph"] for c in comparisons["graphs"]] == list(GRAPH_NAMES)
    by_graph = {c["graph"]: c for c in comparisons["graphs"]}
    assert by_graph["restormer"]["inputs"] == {"blur": [1, 3, 720, 1280], "prior": [1, 4, 32]}
    assert by_graph["denoise_step"]["inputs"] == {"z": [1, 4, 32], "cond": [1, 4, 32], "t": [1]}
    for c in comparisons["graphs"]:
        assert c["runners"] == [ONNXRUNTIME, PYTORCH] and not c["skipped"]
        assert 0 <= c["outputs"][next(iter(c["outputs"]))]["max_abs"] <= c["tolerance"] == 1e-4
    assert "onnxruntime vs pytorch" in runs.fp32.stdout


@pytest.mark.slow
def test_graphs_of_another_model_drift(runs: ExportRuns) -> None:
    profiles = [parse_profile("1x40x56"), parse_profile("2x48x64")]
    same = compare_export(runs.fp32.out_dir, runs.model(), profiles, log=lambda line: None)
    assert same.ok and len(same.comparisons) == 6  # three graphs x two profiles
    other: HIDiff = make_model(seed=1)
    drifted = compare_export(runs.fp32.out_dir, other, profiles, log=lambda line: None)
    assert not drifted.ok
    assert any("DRIFT" in line for line in drifted.lines())
