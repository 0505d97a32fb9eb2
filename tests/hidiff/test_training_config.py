"""hidiff.training.config and hidiff.training.optim: our YAML, official option files, overrides,
and the learning-rate schedule against the official CosineAnnealingRestartCyclicLR formula."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config

from hidiff.config import preset
from hidiff.data.augment import ProgressiveSchedule
from hidiff.training.config import (
    OptimizerConfig,
    RunConfig,
    SchedulerConfig,
    apply_overrides,
    load_run_config,
    run_config_from_dict,
)
from hidiff.training.optim import (
    CosineAnnealingRestartCyclicLR,
    cyclic_cosine_lr,
    make_optimizer,
)

# options/train/GoPro_S2.yml of zhengchen1999/HI-Diff (its settings; comments dropped).
OFFICIAL_GOPRO_S2 = """
name:  train_HI_Diff_GoPro_S2
model_type: HI_Diff_S2
scale: 1
num_gpu: auto
manual_seed: 100
datasets:
  train:
    name: TrainSet
    type: PairedImageIRDataset
    dataroot_gt: datasets/Deblurring/crop/train/target_crops
    dataroot_lq: datasets/Deblurring/crop/train/input_crops
    filename_tmpl: '{}'
    io_backend: {type: disk}
    use_shuffle: true
    num_worker_per_gpu: 4
    batch_size_per_gpu: 16
    mini_batch_sizes: [16,10,8,4,2,2]
    iters: [20000,20000,20000,20000,20000,200000]
    gt_size: 384
    gt_sizes: [128,160,192,256,320,384]
    dataset_enlarge_ratio: 1
    prefetch_mode: ~
  val:
    name: ValSet
    type: PairedImageIRDataset
    dataroot_gt: datasets/Deblurring/crop/val/target_crops
    dataroot_lq: datasets/Deblurring/crop/val/input_crops
    filename_tmpl: '{}'
    io_backend: {type: disk}
network_g: {type: Transformer, inp_channels: 3, out_channels: 3, dim: 48, num_blocks: [3,5,6,6],
  num_refinement_blocks: 4, heads: [1,2,4,8], ffn_expansion_factor: 2.66, bias: False,
  LayerNorm_type: WithBias, dual_pixel_task: False, embed_dim: 64, group: 4}
network_le: {type: latent_encoder_gelu, in_chans: 6, embed_dim: 64, block_num: 6, group: 4, stage: 1,
  patch_expansion: 0.5, channel_expansion: 4}
network_le_dm: {type: latent_encoder_gelu, in_chans: 3, embed_dim: 64, block_num: 6, group: 4, stage: 2,
  patch_expansion: 0.5, channel_expansion: 4}
network_d: {type: denoising, in_channel: 256, out_channel: 256, inner_channel: 512, block_num: 4, group: 4,
  patch_expansion: 0.5, channel_expansion: 2}
diffusion_schedule: {apply_ldm: False, schedule: linear, timesteps: 8, linear_start: 0.1, linear_end: 0.99}
path:
  pretrain_network_g: experiments/S1/models/net_g_300000.pth
  param_key_g: params
  strict_load_g: true
  pretrain_network_le: experiments/S1/models/net_le_300000.pth
  strict_load_le: true
  pretrain_network_le_dm: ~
  pretrain_network_d: ~
  resume_state: ~
train:
  total_iter: 300000
  warmup_iter: -1
  use_grad_clip: True
  scheduler:
    type: CosineAnnealingRestartCyclicLR
    periods: [100000, 200000]
    restart_weights: [1,1]
    eta_mins: [0.0002,0.000001]
  mixing_augs: {mixup: false, mixup_beta: 1.2, use_identity: true}
  optim_total: {type: AdamW, lr: !!float 2e-4, weight_decay: !!float 1e-4, betas: [0.9, 0.999]}
  pixel_opt: {type: L1Loss, loss_weight: 1.0, reduction: mean}
  pixel_diff_opt: {type: L1Loss, loss_weight: 1.0, reduction: mean}
val:
  val_freq: !!float 4e3
  save_img: false
logger:
  print_freq: 1000
  save_checkpoint_freq: !!float 4e3
  use_tb_logger: true
dist_params: {backend: nccl, port: 29500}
"""


def ours(**train) -> dict:
    return {
        "model": tiny_config().to_dict(),
        "data": {"train": [{"input": "a/input", "target": "a/target"}], "num_workers": 0},
        "train": {"stage": 1, "total_iter": 10, **train},
    }


def test_our_format_round_trips_through_yaml(tmp_path: Path) -> None:
    config = run_config_from_dict(ours(optimizer={"lr": "1e-3"}))  # YAML 1.1 reads 1e-3 as a string
    assert config.train.optimizer.lr == pytest.approx(1e-3)
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert load_run_config(path) == config


def test_overrides_reach_nested_keys(tmp_path: Path) -> None:
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(ours()))
    config = load_run_config(path, ["train.total_iter=100", "model.network_g.dim=16", "train.optimizer.grad_clip=null",
                                    "train.progressive={iters: [5], patch_sizes: [64], batch_sizes: [4]}"])
    assert config.train.total_iter == 100
    assert config.model.network_g.dim == 16
    assert config.train.optimizer.grad_clip is None
    assert config.train.progressive == ProgressiveSchedule(iters=(5,), patch_sizes=(64,), batch_sizes=(4,))
    with pytest.raises(ValueError, match="KEY.PATH=VALUE"):
        apply_overrides({}, ["train.total_iter"])


@pytest.mark.parametrize(
    "raw, message",
    [
        (ours(totl_iter=5), r"config\.train: unknown keys \['totl_iter'\]"),
        (ours(total_iter="many"), r"config\.train\.total_iter: expected an integer"),
        (ours(stage=3), "stage 3"),
        (ours(scheduler={"periods": [5, 5], "restart_weights": [1], "eta_mins": [0]}), "same"),
        ({**ours(), "data": {"num_workers": 0}}, "data needs train folders"),
    ],
)
def test_bad_configurations_are_refused_by_name(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_config_from_dict(raw)


def test_official_stage2_option_file_maps_every_setting(tmp_path: Path) -> None:
    path = tmp_path / "GoPro_S2.yml"
    path.write_text(OFFICIAL_GOPRO_S2)
    config = load_run_config(path)
    assert isinstance(config, RunConfig)
    assert config.model == preset("gopro")
    t = config.train
    assert (t.stage, t.total_iter, t.seed) == (2, 300000, 100)
    assert (t.optimizer.lr, t.optimizer.weight_decay, t.optimizer.betas, t.optimizer.grad_clip) == (2e-4, 1e-4, (0.9, 0.999), 0.01)
    assert t.scheduler == SchedulerConfig(periods=(100000, 200000), restart_weights=(1.0, 1.0), eta_mins=(2e-4, 1e-6))
    assert t.progressive == ProgressiveSchedule()  # the official progressive schedule is our default
    assert t.progressive.patch_sizes == (128, 160, 192, 256, 320, 384)
    assert (t.loss.pixel_weight, t.loss.prior_weight) == (1.0, 1.0)
    assert (t.init_net_g, t.init_net_le) == ("experiments/S1/models/net_g_300000.pth", "experiments/S1/models/net_le_300000.pth")
    assert (t.val_every, t.checkpoint_every, t.log_every) == (4000, 4000, 1000)
    assert t.out_dir == str(Path("experiments/train_HI_Diff_GoPro_S2"))
    d = config.data
    assert d.train[0].input == "datasets/Deblurring/crop/train/input_crops"
    assert d.train[0].target == "datasets/Deblurring/crop/train/target_crops"
    assert d.val is not None and d.val.input == "datasets/Deblurring/crop/val/input_crops"
    assert d.num_workers == 4
    # overrides address our keys, also for an official file
    assert load_run_config(path, ["train.total_iter=10"]).train.total_iter == 10


def test_official_stage1_and_unsupported_settings(tmp_path: Path) -> None:
    raw = yaml.safe_load(OFFICIAL_GOPRO_S2)
    raw["model_type"] = "HI_Diff_S1"
    for key in ("network_le_dm", "network_d", "diffusion_schedule"):
        raw.pop(key)
    raw["train"].pop("pixel_diff_opt")
    path = tmp_path / "GoPro_S1.yml"
    path.write_text(yaml.safe_dump(raw))
    config = load_run_config(path)
    assert config.train.stage == 1 and config.train.init_net_g is None

    for change, message in (
        (lambda r: r["train"]["mixing_augs"].update(mixup=True), "mixup"),
        (lambda r: r["train"]["optim_total"].update(type="Adam"), "only AdamW"),
        (lambda r: r["train"]["scheduler"].update(type="MultiStepLR"), "CosineAnnealingRestartCyclicLR"),
        (lambda r: r["train"].update(perceptual_opt={"type": "PerceptualLoss"}), "perceptual"),
    ):
        bad = yaml.safe_load(yaml.safe_dump(raw))
        change(bad)
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ValueError, match=message):
            load_run_config(path)


def official_lr(last_epoch: int, base_lr: float, periods, weights, eta_mins) -> float:
    """hi_diff/utils/lr_scheduler.py CosineAnnealingRestartCyclicLR.get_lr, restated."""
    cumulative = [sum(periods[: i + 1]) for i in range(len(periods))]
    idx = next(i for i, p in enumerate(cumulative) if last_epoch <= p)
    nearest_restart = 0 if idx == 0 else cumulative[idx - 1]
    return eta_mins[idx] + weights[idx] * 0.5 * (base_lr - eta_mins[idx]) * (
        1 + math.cos(math.pi * ((last_epoch - nearest_restart) / periods[idx])))


def test_gopro_schedule_values() -> None:
    cfg = SchedulerConfig()
    assert cyclic_cosine_lr(1, 2e-4, cfg) == pytest.approx(2e-4)
    assert cyclic_cosine_lr(100000, 2e-4, cfg) == pytest.approx(2e-4)
    assert cyclic_cosine_lr(200000, 2e-4, cfg) == pytest.approx(1e-6 + 0.5 * (2e-4 - 1e-6))
    assert cyclic_cosine_lr(300000, 2e-4, cfg) == pytest.approx(1e-6)
    assert cyclic_cosine_lr(300001, 2e-4, cfg) == pytest.approx(1e-6)  # held past the end


def test_scheduler_trains_iteration_i_with_the_official_lr_i(tmp_path: Path) -> None:
    # BasicSR steps the scheduler before iteration i, so iteration i trains with get_lr at last_epoch = i.
    cfg = SchedulerConfig(periods=(3, 5), restart_weights=(1.0, 0.5), eta_mins=(0.1, 0.01))
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = make_optimizer([param], OptimizerConfig(lr=1.0))
    scheduler = CosineAnnealingRestartCyclicLR(optimizer, cfg)
    for i in range(1, 9):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(official_lr(i, 1.0, cfg.periods, cfg.restart_weights, cfg.eta_mins))
        optimizer.step()
        scheduler.step()
    # the state survives a weights_only round trip
    torch.save(scheduler.state_dict(), tmp_path / "scheduler.pt")
    restored = CosineAnnealingRestartCyclicLR(make_optimizer([param], OptimizerConfig(lr=1.0)), cfg)
    restored.load_state_dict(torch.load(tmp_path / "scheduler.pt", weights_only=True))
    assert restored.last_epoch == scheduler.last_epoch
    assert restored.get_lr() == scheduler.get_lr()


@pytest.mark.parametrize("stage", [1, 2])
def test_demo_configs_describe_the_small_shipped_model(stage: int) -> None:
    from hidiff.model import HIDiff
    from hidiff.train_default import STAGE1_OPTIONS, STAGE2_OPTIONS

    config = load_run_config(STAGE1_OPTIONS if stage == 1 else STAGE2_OPTIONS)
    assert config.train.stage == stage
    assert config.model == load_run_config(STAGE1_OPTIONS).model  # stage 2 starts from stage 1's weights
    assert config.train.max_minutes is not None and config.train.max_minutes <= 8.0  # each stage fits a 10-minute GPU call
    assert config.data.synthetic is not None and "rocket" in config.data.synthetic.holdout
    shipped = HIDiff(config.model).num_parameters()  # without LE, as train_default exports it
    assert shipped <= 6_000_000 and 2 * shipped <= 12e6  # float16 weights within 12 MB
