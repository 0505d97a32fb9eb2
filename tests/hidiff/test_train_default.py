"""python -m hidiff.train_default: the demonstration model's recipe, run with a tiny model on the
CPU, whole and in two invocations (as two time-limited GPU jobs run it), and under torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hidiff import train_default
from hidiff.model import HIDiff
from hidiff.training.log import LOG_NAME, read_log

TINY = [
    "model.network_g.dim=8", "model.network_g.num_blocks=[1,1,1,1]", "model.network_g.num_refinement_blocks=1",
    "model.network_g.embed_dim=8", "model.network_le.embed_dim=8", "model.network_le.block_num=1",
    "model.network_le_dm.embed_dim=8", "model.network_le_dm.block_num=1", "model.network_d.in_channel=32",
    "model.network_d.out_channel=32", "model.network_d.inner_channel=32", "train.precision=fp32",
    "train.device=cpu", "data.num_workers=0", "train.progressive.patch_sizes=[32]",
    "train.progressive.batch_sizes=[2]", "train.total_iter=2", "train.progressive.iters=[2]",
    "train.scheduler.periods=[2]", "data.val_max_images=1",
]
ONE_PAIR = ["--test-per-image", "1", "--min-gain", "-99"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--stage1", "{w}", "--stop-after-stage1"], "leave nothing to train"),
        (["--stage1", "{w}", "--stage1-init", "{w}"], "--stage1-init has nothing to start"),
        (["--stage1", "{missing}"], "not found"),
    ],
)
def test_contradictory_or_missing_arguments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        arguments: list[str], message: str) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    filled = [a.format(w=weights, missing=tmp_path / "missing.safetensors") for a in arguments]
    assert train_default.main([str(tmp_path / "out"), *filled]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.slow
def test_stages_in_two_invocations(tmp_path: Path) -> None:
    """--stop-after-stage1, then --stage1: stage 2 starts from the first run's weights and the
    second run exports and scores the model on the held-out pairs."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert train_default.main([str(first), *ONE_PAIR, "--stop-after-stage1", *TINY]) == 0
    stage1 = first / "stage1" / "model.safetensors"
    assert HIDiff.load(stage1).le is not None  # stage 1 keeps LE: stage 2 needs it
    assert not (first / "stage2").exists() and not (first / "default.safetensors").exists()

    assert train_default.main([str(second), *ONE_PAIR, "--stage1", str(stage1), *TINY]) == 0
    assert not (second / "stage1").exists()
    start = next(r for r in read_log(second / "stage2" / LOG_NAME) if r["event"] == "start")
    assert start["init"] == [str(stage1)]
    shipped = HIDiff.load(second / "default.safetensors")
    assert shipped.le is None
    result = json.loads((second / "eval.json").read_text())
    assert [row["name"] for row in result["pairs"]] == ["rocket_000"]
    assert result["gain_db"] == pytest.approx(result["psnr_output"] - result["psnr_input"])


@pytest.mark.slow
def test_two_processes_under_torchrun(tmp_path: Path) -> None:
    """Two gloo processes: both stages train with world size 2, rank 0 alone writes the pairs,
    the export and the scores."""
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "hidiff.train_default", str(out), *ONE_PAIR, *TINY]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    for stage in ("stage1", "stage2"):
        starts = [r for r in read_log(out / stage / LOG_NAME) if r["event"] == "start"]
        assert len(starts) == 1 and starts[0]["world_size"] == 2
    assert sorted(p.name for p in (out / "data" / "test" / "input").iterdir()) == ["rocket_000.png"]
    assert HIDiff.load(out / "default.safetensors").le is None
    assert json.loads((out / "eval.json").read_text())["pairs"][0]["name"] == "rocket_000"
