"""Training configuration: frozen dataclasses, parsed once from our YAML or an official option file.

Our format has three top-level sections::

    model:  HIDiffConfig sections (network_g, network_le, network_le_dm, network_d, diffusion_schedule)
    data:   train folders of input/target pairs and/or a synthetic source, a validation folder
    train:  stage, iterations, progressive schedule, optimizer, scheduler, intervals, out_dir

An official option file (``options/train/GoPro_S1.yml`` ...) is recognised by its ``network_g`` /
``model_type`` keys and translated into the same raw form first (:func:`raw_from_official`), so
``key.path=value`` overrides address our keys in both cases (``train.total_iter=100``). Unknown
keys are refused by name at every level.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hidiff.config import HIDiffConfig, from_official_options
from hidiff.config import read_yaml as read_config_yaml
from hidiff.data.augment import ProgressiveSchedule


@dataclass(frozen=True)
class PairFolders:
    """Blurry images in ``input`` paired by file stem with sharp images in ``target``."""

    input: str
    target: str


@dataclass(frozen=True)
class SyntheticConfig:
    """Training pairs made on the fly from sharp photos (hidiff.data.synthetic_blur's degradation):
    every sample is a fresh random crop of a photo blurred with a freshly drawn camera-shake kernel.

    source: "skimage" (scikit-image's bundled colour photographs), "skimage-extended" (those plus
      its bundled greyscale photographs and textures, as RGB) or a folder of sharp photos.
    holdout: photo names (stems) never used for training (keep them for testing).
    epoch_length: samples per epoch (epochs only number the deterministic sample stream).
    kernel_sizes, kernel_shape, noise_sigma, shot_noise, jpeg_probability, jpeg_quality: the
      degradation (hidiff.data.synthetic_blur.BlurRecipe; defaults equal its defaults).
    rescale: (low, high) photo scale drawn per sample before cropping (area resampling; more
      distinct content from few photos); the low end is raised where the photo would fall below the patch.
    channel_shuffle: permute the RGB channels of each sample at random (colour variety).
    """

    source: str = "skimage"
    holdout: tuple[str, ...] = ("rocket",)
    epoch_length: int = 1000
    kernel_sizes: tuple[int, int] = (7, 31)
    noise_sigma: tuple[float, float] = (0.0, 0.01)
    shot_noise: tuple[float, float] = (0.0, 0.001)
    jpeg_probability: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 95)
    kernel_shape: str = "shake"
    rescale: tuple[float, float] = (1.0, 1.0)
    channel_shuffle: bool = False

    def __post_init__(self) -> None:
        low, high = self.rescale
        if not 0 < low <= high <= 1:
            raise ValueError(f"invalid training configuration: data.synthetic.rescale {list(self.rescale)}: "
                             "need 0 < low <= high <= 1 (downscaling only)")


@dataclass(frozen=True)
class DataConfig:
    """num_workers None means min(8, CPU count) on CUDA and 0 on CPU.
    cache: decode every training image once and keep it in memory (small data sets).
    val_ssim: "matlab" (the paper's GoPro/HIDE SSIM, about 1 s per 640x480 image on a CPU core),
    "per_channel" (BasicSR/scikit-image, faster) or null (PSNR only)."""

    train: tuple[PairFolders, ...] = ()
    synthetic: SyntheticConfig | None = None
    val: PairFolders | None = None
    val_max_images: int = 8
    val_ssim: str | None = "matlab"
    num_workers: int | None = None
    cache: bool = False
    flip_rotate: bool = True


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW (official ``optim_total``); grad_clip is the max global gradient norm, None for none."""

    lr: float = 2e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 0.01


@dataclass(frozen=True)
class SchedulerConfig:
    """CosineAnnealingRestartCyclicLR (official ``scheduler``): one cosine cycle per period."""

    periods: tuple[int, ...] = (100000, 200000)
    restart_weights: tuple[float, ...] = (1.0, 1.0)
    eta_mins: tuple[float, ...] = (2e-4, 1e-6)


@dataclass(frozen=True)
class LossConfig:
    """Weights of L1(output, sharp) and, in stage 2, L1(z_hat, z) (official pixel_opt, pixel_diff_opt)."""

    pixel_weight: float = 1.0
    prior_weight: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """One training stage.

    stage: 1 (Restormer + LE on the ground-truth prior) or 2 (Restormer + LE_DM + denoiser, LE frozen).
    init: stage 2's starting weights, our stage-1 export (.safetensors) or training checkpoint (.pt);
      init_net_g / init_net_le: the same from official ``.pth`` files.
    max_minutes: wall-time budget of this process's loop; when reached it saves, exports and stops.
    precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32".
    cudnn_benchmark: let cuDNN time its algorithms for every new shape (pays off in long runs;
      costs tens of seconds per patch size, too much for a minutes-long run).
    channels_last: run the objective in channels-last layout on CUDA (the layout the inference
      engines use; cuDNN's depthwise and 1x1 convolutions are faster in it).
    compile: torch.compile the training step's forward and backward (one compile per patch size,
      2.5-3 minutes each for the demonstration model; CUDA only, ignored on CPU).
    zero_init_output: a fresh stage 1 starts the Restormer at the identity (its last convolution
      zeroed: the output is the input), so a short training never starts worse than its input.
    export: path of the exported HIDiff weights (default OUT_DIR/model.safetensors).
    """

    stage: int = 1
    total_iter: int = 300000
    max_minutes: float | None = None
    seed: int = 100
    out_dir: str = "experiments/hidiff"
    init: str | None = None
    init_net_g: str | None = None
    init_net_le: str | None = None
    device: str = "auto"
    precision: str = "auto"
    cudnn_benchmark: bool = True
    channels_last: bool = False
    compile: bool = False
    zero_init_output: bool = False
    log_every: int = 100
    val_every: int = 4000
    checkpoint_every: int = 4000
    keep_checkpoints: int = 3
    export: str | None = None
    export_fp16: bool = False
    export_stage1_encoder: bool = True
    progressive: ProgressiveSchedule = field(default_factory=ProgressiveSchedule)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.stage in (1, 2), f"stage {self.stage}: 1 or 2"),
            (self.total_iter >= 1, f"total_iter {self.total_iter}: at least 1"),
            (self.precision in ("auto", "bf16", "fp32"), f"precision {self.precision!r}: auto, bf16 or fp32"),
            (self.max_minutes is None or self.max_minutes > 0, f"max_minutes {self.max_minutes}: positive or null"),
            (min(self.log_every, self.val_every, self.checkpoint_every) >= 1, "log_every, val_every, checkpoint_every: >= 1"),
            (self.keep_checkpoints >= 1, f"keep_checkpoints {self.keep_checkpoints}: at least 1"),
            (self.optimizer.lr > 0, f"optimizer.lr {self.optimizer.lr}: positive"),
            (self.optimizer.grad_clip is None or self.optimizer.grad_clip > 0, "optimizer.grad_clip: positive or null"),
        ]
        s = self.scheduler
        same_length = (
            f"scheduler periods {s.periods}, restart_weights {s.restart_weights} and eta_mins {s.eta_mins} "
            "need the same (non-zero) length"
        )
        checks.append((len(s.periods) == len(s.restart_weights) == len(s.eta_mins) >= 1, same_length))
        checks.append((all(p >= 1 for p in s.periods), f"scheduler periods {s.periods}: positive"))
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid training configuration: train.{message}")


@dataclass(frozen=True)
class RunConfig:
    model: HIDiffConfig = field(default_factory=HIDiffConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.data.val_ssim not in (None, "matlab", "per_channel"):
            raise ValueError(f"invalid training configuration: data.val_ssim {self.data.val_ssim!r}: matlab, per_channel or null")
        if not self.data.train and self.data.synthetic is None:
            raise ValueError("invalid training configuration: data needs train folders (data.train) or data.synthetic")

    def to_dict(self) -> dict[str, Any]:
        """Plain containers (tuples as lists): YAML/JSON-serialisable, and :func:`run_config_from_dict`'s input."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Strict construction of the dataclasses from parsed YAML
# --------------------------------------------------------------------------------------------


def build_dataclass(kind: type, values: Any, where: str) -> Any:
    """Build dataclass ``kind`` from a mapping, converting nested sections, tuples and numbers;
    unknown keys and wrong types are errors naming the key path ``where``."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping of {kind.__name__} fields, got {values!r}")
    hints = typing.get_type_hints(kind)
    names = {f.name for f in dataclasses.fields(kind) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known keys are {sorted(names)}")
    kwargs = {key: _convert(hints[key], value, f"{where}.{key}") for key, value in values.items()}
    try:
        return kind(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if hint is HIDiffConfig:
            try:
                return HIDiffConfig.from_dict(value)
            except (TypeError, AttributeError) as exc:
                raise ValueError(f"{where}: expected a mapping of HI-Diff sections, got {value!r}") from exc
        return build_dataclass(hint, value, where)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where}: expected {len(args)} values, got {list(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        # YAML 1.1 reads 1e-4 (no dot) as a string; accept it as the number it obviously is.
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: expected a number, got {value!r}") from exc
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"{where}: unsupported field type {hint!r}")


def run_config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Our raw format (``RunConfig.to_dict()``'s shape) -> RunConfig, strictly."""
    return build_dataclass(RunConfig, raw, "config")


# --------------------------------------------------------------------------------------------
# Official option files
# --------------------------------------------------------------------------------------------

_OFFICIAL_STAGES = {"HI_Diff_S1": 1, "HI_Diff_S2": 2}


def is_official(raw: Mapping[str, Any]) -> bool:
    return "network_g" in raw or "model_type" in raw


def _l1_weight(section: Mapping[str, Any] | None, name: str) -> float:
    if not section:
        return 0.0
    kind = section.get("type")
    if kind != "L1Loss" or section.get("reduction", "mean") != "mean":
        raise ValueError(f"train.{name}: only L1Loss with reduction 'mean' is supported, got {dict(section)}")
    return float(section.get("loss_weight", 1.0))


def raw_from_official(options: Mapping[str, Any]) -> dict[str, Any]:
    """Translate an official training option file into our raw format.

    Mapped: network_* and diffusion_schedule (via hidiff.config.from_official_options);
    model_type -> stage; datasets.train (dataroot_lq/gt, iters/gt_sizes/mini_batch_sizes,
    num_worker_per_gpu); datasets.val; train (total_iter, optim_total, scheduler, use_grad_clip,
    pixel_opt, pixel_diff_opt); path.pretrain_network_g/le (stage-2 init); manual_seed;
    val.val_freq; logger.print_freq/save_checkpoint_freq; name -> out_dir experiments/NAME.
    Anything we would silently compute differently (mixup, warm-up, EMA, perceptual loss,
    another optimizer or scheduler) is an error.
    """
    model_type = options.get("model_type")
    if model_type not in _OFFICIAL_STAGES:
        raise ValueError(f"model_type {model_type!r}: expected one of {sorted(_OFFICIAL_STAGES)} (HI-Diff training)")
    stage = _OFFICIAL_STAGES[model_type]
    model = from_official_options(options).to_dict()

    datasets = options.get("datasets") or {}
    train_ds = datasets.get("train") or {}
    val_ds = datasets.get("val")
    train_opt = options.get("train") or {}
    path_opt = options.get("path") or {}
    logger_opt = options.get("logger") or {}
    val_opt = options.get("val") or {}

    for key in ("dataroot_lq", "dataroot_gt"):
        if not train_ds.get(key):
            raise ValueError(f"datasets.train.{key} is missing: the official file must name its training folders")
    if (train_opt.get("mixing_augs") or {}).get("mixup"):
        raise ValueError("train.mixing_augs.mixup: mixup augmentation is not supported; set it to false")
    if int(train_opt.get("warmup_iter", -1)) > 0:
        raise ValueError("train.warmup_iter: learning-rate warm-up is not supported; set it to -1")
    if float(train_opt.get("ema_decay", 0) or 0) > 0:
        raise ValueError("train.ema_decay: EMA is not supported (the official code does not implement it either)")
    if train_opt.get("perceptual_opt"):
        raise ValueError("train.perceptual_opt: the perceptual loss is not supported")

    optim = dict(train_opt.get("optim_total") or {"type": "AdamW"})
    if optim.pop("type", "AdamW") != "AdamW":
        raise ValueError(f"train.optim_total.type: only AdamW is supported, got {train_opt['optim_total'].get('type')!r}")
    unknown_optim = set(optim) - {"lr", "weight_decay", "betas"}
    if unknown_optim:
        raise ValueError(f"train.optim_total: unsupported keys {sorted(unknown_optim)}")
    sched = dict(train_opt.get("scheduler") or {})
    if sched.pop("type", None) != "CosineAnnealingRestartCyclicLR":
        raise ValueError(
            f"train.scheduler.type: only CosineAnnealingRestartCyclicLR is supported, got {train_opt.get('scheduler')}"
        )

    raw_train: dict[str, Any] = {
        "stage": stage,
        "seed": int(options.get("manual_seed", 100)),
        "out_dir": str(Path("experiments") / str(options.get("name", f"hidiff_s{stage}")).strip()),
        "optimizer": {**optim, "grad_clip": 0.01 if train_opt.get("use_grad_clip", True) else None},
        "scheduler": sched,
        "loss": {
            "pixel_weight": _l1_weight(train_opt.get("pixel_opt"), "pixel_opt"),
            "prior_weight": _l1_weight(train_opt.get("pixel_diff_opt"), "pixel_diff_opt") if stage == 2 else 1.0,
        },
    }
    if "total_iter" in train_opt:
        raw_train["total_iter"] = int(train_opt["total_iter"])
    if all(k in train_ds for k in ("iters", "gt_sizes", "mini_batch_sizes")):
        raw_train["progressive"] = {
            "iters": list(train_ds["iters"]),
            "patch_sizes": list(train_ds["gt_sizes"]),
            "batch_sizes": list(train_ds["mini_batch_sizes"]),
        }
    elif "gt_size" in train_ds:
        raw_train["progressive"] = {
            "iters": [int(train_opt.get("total_iter", 300000))],
            "patch_sizes": [int(train_ds["gt_size"])],
            "batch_sizes": [int(train_ds.get("batch_size_per_gpu", 16))],
        }
    if "val_freq" in val_opt:
        raw_train["val_every"] = int(float(val_opt["val_freq"]))
    if "save_checkpoint_freq" in logger_opt:
        raw_train["checkpoint_every"] = int(float(logger_opt["save_checkpoint_freq"]))
    if "print_freq" in logger_opt:
        raw_train["log_every"] = int(float(logger_opt["print_freq"]))
    if stage == 2:
        if path_opt.get("pretrain_network_g"):
            raw_train["init_net_g"] = str(path_opt["pretrain_network_g"])
        if path_opt.get("pretrain_network_le"):
            raw_train["init_net_le"] = str(path_opt["pretrain_network_le"])

    raw_data: dict[str, Any] = {"train": [{"input": str(train_ds["dataroot_lq"]), "target": str(train_ds["dataroot_gt"])}]}
    if "num_worker_per_gpu" in train_ds:
        raw_data["num_workers"] = int(train_ds["num_worker_per_gpu"])
    if val_ds and val_ds.get("dataroot_lq") and val_ds.get("dataroot_gt"):
        raw_data["val"] = {"input": str(val_ds["dataroot_lq"]), "target": str(val_ds["dataroot_gt"])}
    return {"model": model, "data": raw_data, "train": raw_train}


# --------------------------------------------------------------------------------------------
# Files and overrides
# --------------------------------------------------------------------------------------------


def read_yaml(path: str | Path) -> dict[str, Any]:
    data = read_config_yaml(path, "training configuration")
    if not isinstance(data, dict):
        raise ValueError(f"training configuration {path} must be a YAML mapping, got {type(data).__name__}")
    return data


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``a.b.c=value`` overrides applied (value parsed as YAML)."""
    out = _deep_copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected KEY.PATH=VALUE, e.g. train.total_iter=100")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({exc})") from exc
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {'.'.join(parts[: depth + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_deep_copy(v) for v in value]
    return value


def load_run_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read our YAML or an official training option file, apply overrides, build the dataclasses."""
    raw = read_yaml(path)
    if is_official(raw):
        raw = raw_from_official(raw)
    try:
        return run_config_from_dict(apply_overrides(raw, overrides))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
