"""hidiff.train on a tiny configuration on the CPU: the loss falls, the log has its records,
resuming in a fresh process continues bit-identically, the time budget stops cleanly, and bad
data is reported with the file named."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_config
from training_helpers import write_pairs

from hidiff.checkpoint import load_safetensors
from hidiff.model import HIDiff
from hidiff.train import _match_parameter_layouts, main, run
from hidiff.training.config import run_config_from_dict
from hidiff.training.log import LOG_NAME, read_log
from hidiff.training.weights import export_weights, load_init_weights

REPO = Path(__file__).resolve().parents[2]


def raw_config(tmp_path: Path, data: Path, out: str = "out", **train) -> dict:
    return {
        "model": tiny_config().to_dict(),
        "data": {
            "train": [{"input": str(data / "input"), "target": str(data / "target")}],
            "val": {"input": str(data / "input"), "target": str(data / "target")},
            "val_max_images": 2,
            "val_ssim": "per_channel",
            "num_workers": 0,
        },
        "train": {
            "stage": 1,
            "total_iter": 4,
            "out_dir": str(tmp_path / out),
            "device": "cpu",
            "log_every": 1,
            "val_every": 1000,
            "checkpoint_every": 1000,
            "progressive": {"iters": [3, 3], "patch_sizes": [32, 40], "batch_sizes": [2, 1]},
            "optimizer": {"lr": 1e-3},
            "scheduler": {"periods": [6], "restart_weights": [1.0], "eta_mins": [1e-5]},
            **train,
        },
    }


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs"), 4)


def test_stage1_loss_falls_and_the_log_has_its_records(tmp_path: Path, pairs: Path) -> None:
    config = run_config_from_dict(raw_config(
        tmp_path, pairs, total_iter=30, val_every=15,
        progressive={"iters": [30], "patch_sizes": [32], "batch_sizes": [4]},
        optimizer={"lr": 2e-3}, scheduler={"periods": [30], "restart_weights": [1.0], "eta_mins": [2e-3]},
    ))
    result = run(config, progress=False)
    assert result.iteration == 30 and not result.stopped_early

    records = read_log(tmp_path / "out" / LOG_NAME)
    train = [r for r in records if r["event"] == "train"]
    assert [r["iter"] for r in train] == list(range(1, 31))
    assert set(train[0]) >= {"event", "iter", "time", "loss", "l_pix", "lr", "it_per_s", "patch", "batch", "elapsed_s"}
    losses = [r["loss"] for r in train]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    val = [r for r in records if r["event"] == "val"]
    assert [r["iter"] for r in val] == [15, 30]
    assert all(r["psnr"] > 10 and 0 < r["ssim"] <= 1 for r in val)
    assert result.last_validation is not None and result.last_validation["psnr"] == val[-1]["psnr"]
    assert records[0]["event"] == "start" and records[-1]["event"] == "end"

    # stage 1 exports with LE (stage 2 starts from it); the file loads as a model
    exported = HIDiff.load(result.export_path)
    assert exported.le is not None
    assert (tmp_path / "out" / "checkpoints" / "iter_0000030.pt").is_file()
    assert yaml.safe_load((tmp_path / "out" / "config.yml").read_text())["train"]["total_iter"] == 30


def test_stage2_resume_in_a_fresh_process_is_bit_identical(tmp_path: Path, pairs: Path) -> None:
    torch.manual_seed(0)
    stage1 = tmp_path / "stage1.safetensors"
    HIDiff(tiny_config(), with_stage1_encoder=True).save(stage1)
    raw = raw_config(tmp_path, pairs, stage=2, init=str(stage1))

    straight = run(run_config_from_dict({**raw, "train": {**raw["train"], "out_dir": str(tmp_path / "a")}}), progress=False)

    # 2 of 4 iterations, a checkpoint, then a new process resumes across the progressive stage change
    half = {**raw, "train": {**raw["train"], "out_dir": str(tmp_path / "b"), "total_iter": 2}}
    run(run_config_from_dict(half), progress=False)
    config_file = tmp_path / "b.yml"
    config_file.write_text(yaml.safe_dump({**half, "train": {**half["train"], "total_iter": 4}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "hidiff.train", str(config_file), "--resume", "auto", "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr

    a, _ = load_safetensors(straight.export_path)
    b, meta = load_safetensors(tmp_path / "b" / "model.safetensors")
    assert meta["training"] == {"stage": 2, "iteration": 4}
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log_a = [r for r in read_log(tmp_path / "a" / LOG_NAME) if r["event"] == "train"]
    log_b = [r for r in read_log(tmp_path / "b" / LOG_NAME) if r["event"] == "train"]
    assert [(r["loss"], r["l_prior"], r["lr"]) for r in log_a] == [(r["loss"], r["l_prior"], r["lr"]) for r in log_b]


def test_time_budget_stops_saves_and_exports(tmp_path: Path, pairs: Path) -> None:
    config = run_config_from_dict(raw_config(tmp_path, pairs, total_iter=50, max_minutes=1e-6))
    result = run(config, progress=False)
    assert result.stopped_early and result.iteration == 1
    assert result.checkpoint_path == tmp_path / "out" / "checkpoints" / "iter_0000001.pt"
    assert result.export_path is not None and result.export_path.is_file()
    assert any(r["event"] == "budget" for r in read_log(tmp_path / "out" / LOG_NAME))


def test_bad_data_is_reported_with_the_file_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_pairs(tmp_path / "data", 3)
    (data / "input" / "img2.png").write_bytes(b"\x89PNG broken")
    raw = raw_config(tmp_path, data, progressive={"iters": [4], "patch_sizes": [32], "batch_sizes": [3]})
    with pytest.raises(ValueError, match="img2.png"):
        run(run_config_from_dict(raw), progress=False)

    (data / "target" / "img1.png").unlink()
    config_file = tmp_path / "bad.yml"
    config_file.write_text(yaml.safe_dump(raw))
    assert main([str(config_file), "--no-progress"]) == 2
    assert "img1.png" in capsys.readouterr().err


def test_stage2_needs_stage1_weights_and_resume_checks_the_model(tmp_path: Path, pairs: Path) -> None:
    with pytest.raises(ValueError, match="stage 2 needs stage 1"):
        run(run_config_from_dict(raw_config(tmp_path, pairs, stage=2)), progress=False)

    run(run_config_from_dict(raw_config(tmp_path, pairs, total_iter=1)), progress=False)
    other = raw_config(tmp_path, pairs, total_iter=2)
    other["model"]["network_g"]["dim"] = 16
    with pytest.raises(ValueError, match=r"network_g\.dim: 8 vs 16"):
        run(run_config_from_dict(other), resume="auto", progress=False)


def test_stage2_from_a_stage2_export_continues_its_prior_networks(tmp_path: Path, pairs: Path) -> None:
    torch.manual_seed(0)
    stage1 = tmp_path / "stage1.safetensors"
    HIDiff(tiny_config(), with_stage1_encoder=True).save(stage1, training={"stage": 1})
    first = run(run_config_from_dict(raw_config(tmp_path, pairs, "first", stage=2, init=str(stage1), total_iter=2)),
                progress=False)
    assert first.export_path is not None

    def prior_networks(model: HIDiff) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("le_dm.", "denoiser."))}

    def starting_model(init: Path) -> HIDiff:
        config = run_config_from_dict(raw_config(tmp_path, pairs, stage=2, init=str(init)))
        model = HIDiff(config.model, with_stage1_encoder=True)
        load_init_weights(model, config.train)
        return model

    trained = prior_networks(HIDiff.load(first.export_path))
    # From stage 2's export: LE_DM and the denoiser continue where it ended.
    continued = prior_networks(starting_model(first.export_path))
    assert continued.keys() == trained.keys()
    assert all(torch.equal(continued[k], trained[k]) for k in trained)
    # From stage 1's export (their random init in the file): they start fresh, as the official recipe.
    stage1_prior = {k: v for k, v in load_safetensors(stage1)[0].items() if k.startswith(("le_dm.", "denoiser."))}
    torch.manual_seed(1)
    fresh = prior_networks(starting_model(stage1))
    assert not all(torch.equal(fresh[k], stage1_prior[k]) for k in stage1_prior)


def test_zero_init_output_starts_stage1_at_the_identity(tmp_path: Path, pairs: Path) -> None:
    config = run_config_from_dict(raw_config(tmp_path, pairs, total_iter=1, zero_init_output=True,
                                             optimizer={"lr": 1e-12}, scheduler={"periods": [1], "restart_weights": [1.0], "eta_mins": [1e-12]}))
    model = run(config, progress=False).model
    assert float(model.restormer.output.weight.detach().abs().max()) < 1e-9
    blur = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.restormer(blur, torch.zeros(1, *model.prior_shape)), blur, atol=1e-6)


def test_export_float16_without_the_stage1_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = HIDiff(tiny_config(), with_stage1_encoder=True)
    path = export_weights(model, tmp_path / "small.safetensors", fp16=True, include_stage1_encoder=False, note="x")
    tensors, meta = load_safetensors(path)
    assert not any(k.startswith("le.") for k in tensors)
    assert all(v.dtype == torch.float16 for v in tensors.values() if v.is_floating_point())
    assert meta["note"] == "x"
    loaded = HIDiff.load(path)
    assert loaded.le is None
    reference = model.restormer.state_dict()
    for key, value in loaded.restormer.state_dict().items():
        assert torch.equal(value, reference[key].half().float())


def test_benchmark_flag_reports_iterations_per_second(tmp_path: Path, pairs: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "tiny.yml"
    config_file.write_text(yaml.safe_dump(raw_config(tmp_path, pairs)))
    assert main(["--benchmark", str(config_file), "--benchmark-iters", "2", "--patch", "32", "--batch", "2",
                 "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["benchmark"] == "stage2_train_step" and result["iterations_per_s"] > 0
    assert (result["patch"], result["batch"], result["precision"], result["device"]) == (32, 2, "fp32", "cpu")


def test_benchmark_reports_that_layout_and_compile_are_cuda_only(tmp_path: Path, pairs: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "tiny.yml"
    config_file.write_text(yaml.safe_dump(raw_config(tmp_path, pairs)))
    assert main(["--benchmark", str(config_file), "--benchmark-stage", "1", "--benchmark-iters", "1", "--patch", "32",
                 "--batch", "1", "--device", "cpu", "--channels-last", "--compile"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])
    # On the CPU both options are ignored, and the report says so rather than claiming them.
    assert (result["channels_last"], result["compiled"], result["cudnn_benchmark"]) == (False, False, False)
    assert "eager" in printed[-2] and result["benchmark"] == "stage1_train_step"


def test_restored_optimizer_state_takes_its_parameters_layout() -> None:
    # A checkpoint of a contiguous run resumed with train.channels_last (or the other way round).
    weight = torch.nn.Parameter(torch.randn(4, 3, 3, 3))
    optimizer = torch.optim.AdamW([weight])
    weight.grad = torch.randn_like(weight)
    optimizer.step()
    saved = optimizer.state_dict()
    weight_cl = torch.nn.Parameter(weight.detach().clone().to(memory_format=torch.channels_last))
    resumed = torch.optim.AdamW([weight_cl])
    resumed.load_state_dict(saved)
    assert resumed.state[weight_cl]["exp_avg"].stride() != weight_cl.stride()
    _match_parameter_layouts(resumed)
    for key in ("exp_avg", "exp_avg_sq"):
        restored = resumed.state[weight_cl][key]
        assert restored.stride() == weight_cl.stride() and torch.equal(restored, optimizer.state[weight][key])
    assert resumed.state[weight_cl]["step"].shape == ()  # the scalar step is left alone


@pytest.mark.gpu
def test_channels_last_compiled_stage1_trains_on_the_gpu(tmp_path: Path, pairs: Path) -> None:
    config = run_config_from_dict(raw_config(tmp_path, pairs, device="cuda", total_iter=3, channels_last=True,
                                             compile=True))
    result = run(config, progress=False)
    restormer_conv = result.model.restormer.output.weight
    assert restormer_conv.is_cuda and restormer_conv.is_contiguous(memory_format=torch.channels_last)
    train = [r for r in read_log(tmp_path / "out" / LOG_NAME) if r["event"] == "train"]
    assert len(train) == 3 and all(np.isfinite(r["loss"]) for r in train)
    assert result.export_path is not None and HIDiff.load(result.export_path) is not None


@pytest.mark.gpu
def test_bf16_stage2_steps_on_the_gpu(tmp_path: Path, pairs: Path) -> None:
    torch.manual_seed(0)
    stage1 = tmp_path / "stage1.safetensors"
    HIDiff(tiny_config(), with_stage1_encoder=True).save(stage1)
    config = run_config_from_dict(raw_config(tmp_path, pairs, stage=2, init=str(stage1), device="cuda", total_iter=3))
    result = run(config, progress=False)
    assert next(result.model.parameters()).is_cuda
    train = [r for r in read_log(tmp_path / "out" / LOG_NAME) if r["event"] == "train"]
    assert len(train) == 3 and all(np.isfinite(r["loss"]) for r in train)
    assert result.last_validation is not None and np.isfinite(result.last_validation["psnr"])
