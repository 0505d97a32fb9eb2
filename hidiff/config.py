"""Model configuration: frozen dataclasses, parsed once, from our YAML or the official option files.

Field names equal the official option keys (``network_g``, ``network_le_dm``, ``network_d``,
``diffusion_schedule``) so that an official file maps one to one. Unknown keys are refused by name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml


@dataclass(frozen=True)
class RestormerConfig:
    """The prior-guided Restormer (``network_g``, official type ``Transformer``)."""

    inp_channels: int = 3
    out_channels: int = 3
    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (3, 5, 6, 6)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    LayerNorm_type: str = "WithBias"
    embed_dim: int = 64
    group: int = 4


@dataclass(frozen=True)
class EncoderConfig:
    """A latent encoder (``network_le`` with 6 input channels, ``network_le_dm`` with 3)."""

    in_chans: int = 3
    embed_dim: int = 64
    block_num: int = 6
    group: int = 4
    patch_expansion: float = 0.5
    channel_expansion: float = 4
    activation: str = "gelu"  # official types latent_encoder_gelu / latent_encoder_lrelu


@dataclass(frozen=True)
class DenoiserConfig:
    """The denoising network (``network_d``): official type ``denoising`` (token/channel-mixing MLP)
    or ``simple_denoise`` (residual MLP, RealBlur releases)."""

    kind: str = "denoising"
    in_channel: int = 256
    out_channel: int = 256
    inner_channel: int = 512
    block_num: int = 4
    group: int = 4
    patch_expansion: float = 0.5
    channel_expansion: float = 2
    layerscale_value: float = 1e-3
    # simple_denoise only
    n_feats: int = 64
    n_denoise_res: int = 5
    timesteps: int = 5


@dataclass(frozen=True)
class ScheduleConfig:
    """``diffusion_schedule``. ``apply_ldm`` selects the official sampler variant:
    False: x0 clamped to [-1, 1], the denoiser sees t + 1 (GoPro release);
    True: the LDM DDPM path, no clamp, the denoiser sees t (RealBlur releases)."""

    schedule: str = "linear"
    timesteps: int = 8
    linear_start: float = 0.1
    linear_end: float = 0.99
    apply_ldm: bool = False


# Bounds of every size, far beyond any HI-Diff release (the GoPro model has dim 48 and at most 6
# blocks per level) and small enough that the numbers alone cannot ask for an absurd network: a
# configuration read from a file is checked against them before a module is built.
Bounds = dict[str, tuple[float, float]]
_RESTORMER_BOUNDS: Bounds = {
    "inp_channels": (1, 16), "out_channels": (1, 16), "dim": (1, 512), "num_blocks": (0, 32),
    "num_refinement_blocks": (0, 32), "heads": (1, 64), "ffn_expansion_factor": (0.01, 8), "embed_dim": (1, 1024),
    "group": (2, 16),
}
_ENCODER_BOUNDS: Bounds = {
    "in_chans": (1, 16), "embed_dim": (1, 1024), "block_num": (0, 32), "group": (2, 16),
    "patch_expansion": (0.01, 8), "channel_expansion": (0.01, 16),
}
_DENOISER_BOUNDS: Bounds = {
    "in_channel": (1, 4096), "out_channel": (1, 4096), "inner_channel": (1, 8192), "block_num": (0, 32),
    "group": (2, 16), "patch_expansion": (0.01, 8), "channel_expansion": (0.01, 16), "n_feats": (1, 1024),
    "n_denoise_res": (0, 32), "timesteps": (1, 10_000),
}
_SCHEDULE_BOUNDS: Bounds = {"timesteps": (1, 1000)}


def _out_of_bounds(section: str, config: Any, bounds: Bounds) -> list[str]:
    """``"network_g.dim 4096 is outside 1..512"`` for each value of ``config`` outside ``bounds``."""
    found = []
    for key, (lo, hi) in bounds.items():
        value = getattr(config, key)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                found.append(f"{section}.{key} {value!r} is outside {lo:g}..{hi:g}")
                break
    return found


@dataclass(frozen=True)
class HIDiffConfig:
    network_g: RestormerConfig = field(default_factory=RestormerConfig)
    network_le: EncoderConfig = field(default_factory=lambda: EncoderConfig(in_chans=6))
    network_le_dm: EncoderConfig = field(default_factory=EncoderConfig)
    network_d: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    @property
    def prior_tokens(self) -> int:
        return self.network_g.group**2

    @property
    def prior_channels(self) -> int:
        return 4 * self.network_g.embed_dim

    def __post_init__(self) -> None:
        g = self.network_g
        too_large = (_out_of_bounds("network_g", g, _RESTORMER_BOUNDS)
                     + _out_of_bounds("network_le", self.network_le, _ENCODER_BOUNDS)
                     + _out_of_bounds("network_le_dm", self.network_le_dm, _ENCODER_BOUNDS)
                     + _out_of_bounds("network_d", self.network_d, _DENOISER_BOUNDS)
                     + _out_of_bounds("diffusion_schedule", self.diffusion_schedule, _SCHEDULE_BOUNDS))
        if too_large:
            raise ValueError("invalid HI-Diff configuration: " + "; ".join(too_large)
                             + " (bounds far beyond any HI-Diff release: the values are damaged or not a HI-Diff "
                             "configuration)")
        checks = [
            (g.LayerNorm_type in ("WithBias", "BiasFree"), f"LayerNorm_type {g.LayerNorm_type!r}: WithBias or BiasFree"),
            (g.group >= 2 and g.group % 2 == 0, f"group {g.group}: an even number >= 2 (the multi-scale prior halves it)"),
            (len(g.num_blocks) == 4 and len(g.heads) == 4, "num_blocks and heads need four entries"),
            (self.diffusion_schedule.timesteps >= 1, "timesteps must be >= 1"),
        ]
        for name in ("network_le", "network_le_dm"):
            enc: EncoderConfig = getattr(self, name)
            checks.append((enc.activation in ("gelu", "lrelu"), f"{name}.activation {enc.activation!r}: gelu or lrelu"))
            checks.append((enc.group == g.group, f"{name}.group {enc.group} differs from network_g.group {g.group}"))
        checks.append((self.network_d.kind in ("denoising", "simple_denoise"), f"network_d kind {self.network_d.kind!r}"))
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid HI-Diff configuration: {message}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HIDiffConfig":
        """Our own format (``to_dict``'s output), strict about unknown keys."""
        sections = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(sections)
        if unknown:
            raise ValueError(f"unknown configuration sections {sorted(unknown)}; expected {sorted(sections)}")
        kwargs = {}
        for name, value in data.items():
            kwargs[name] = _build(_section_type(name), value, name)
        return cls(**kwargs)


def _section_type(name: str) -> type:
    return {
        "network_g": RestormerConfig,
        "network_le": EncoderConfig,
        "network_le_dm": EncoderConfig,
        "network_d": DenoiserConfig,
        "diffusion_schedule": ScheduleConfig,
    }[name]


def _build(kind: type, values: Mapping[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known keys are {sorted(fields)}")
    kwargs = {}
    for key, value in values.items():
        default = getattr(kind(), key)
        if isinstance(default, tuple):
            value = tuple(value)
        elif isinstance(default, bool):
            value = bool(value)
        elif isinstance(default, float):
            value = float(value)
        elif isinstance(default, int) and not isinstance(value, int):
            raise ValueError(f"{where}.{key}: expected an integer, got {value!r}")
        kwargs[key] = value
    return kind(**kwargs)


# Keys of the official option files that describe things other than sizes: accepted and ignored.
_OFFICIAL_IGNORED = {
    "network_g": {"type", "dual_pixel_task"},
    "network_le": {"type", "stage"},
    "network_le_dm": {"type", "stage"},
    "network_d": {"type"},
    "diffusion_schedule": set(),
}
_OFFICIAL_SECTIONS_IGNORED = {
    "name", "model_type", "scale", "num_gpu", "manual_seed", "datasets", "path", "val", "train", "logger",
    "dist_params", "is_train", "dist", "rank", "world_size",
}


def read_yaml(path: str | Path, what: str = "configuration") -> Any:
    """The parsed YAML at ``path``; unreadable or invalid files raise naming ``what`` and the path."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise FileNotFoundError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {path} is not valid YAML: {exc}") from exc


def from_official_options(options: Mapping[str, Any] | str | Path) -> HIDiffConfig:
    """Parse an official option file (path or parsed dict) into a configuration.

    Every size the file expresses is honoured; unknown keys inside the network sections are an
    error (they would mean a size we silently ignore).
    """
    if isinstance(options, (str, Path)):
        options = read_yaml(options, "option file")
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a mapping or a YAML path, got {type(options).__name__}")
    unknown = set(options) - set(_OFFICIAL_IGNORED) - _OFFICIAL_SECTIONS_IGNORED
    if unknown:
        raise ValueError(f"unknown option sections {sorted(unknown)}")
    sections: dict[str, Any] = {}
    for name in ("network_g", "network_le", "network_le_dm", "network_d", "diffusion_schedule"):
        raw = dict(options.get(name) or {})
        kind = raw.get("type", "")
        values = {k: v for k, v in raw.items() if k not in _OFFICIAL_IGNORED[name]}
        if name in ("network_le", "network_le_dm") and kind:
            if kind not in ("latent_encoder_gelu", "latent_encoder_lrelu"):
                raise ValueError(f"{name}.type {kind!r}: expected latent_encoder_gelu or latent_encoder_lrelu")
            values["activation"] = kind.rsplit("_", 1)[1]
        if name == "network_d" and kind:
            if kind not in ("denoising", "simple_denoise"):
                raise ValueError(f"network_d.type {kind!r}: expected denoising or simple_denoise")
            values["kind"] = kind
        if name == "network_le" and not raw:
            # Test option files omit stage 1's encoder; derive it from LE_DM's sizes.
            le_dm = dict(options.get("network_le_dm") or {})
            values = {k: v for k, v in le_dm.items() if k not in _OFFICIAL_IGNORED[name]}
            if le_dm.get("type"):
                values["activation"] = le_dm["type"].rsplit("_", 1)[1]
            values["in_chans"] = 6
        if raw.get("dual_pixel_task"):
            raise ValueError("network_g.dual_pixel_task: dual-pixel defocus deblurring is not supported")
        sections[name] = _build(_section_type(name), values, name)
    return HIDiffConfig(**sections)


def _gopro() -> HIDiffConfig:
    return HIDiffConfig()


def _realblur() -> HIDiffConfig:
    # options/test/RealBlur_{J,R}.yml: FFN expansion 2, LeakyReLU encoders with 5 blocks,
    # the simple residual-MLP denoiser and the LDM sampler with 16 steps.
    return HIDiffConfig(
        network_g=RestormerConfig(ffn_expansion_factor=2.0),
        network_le=EncoderConfig(in_chans=6, block_num=5, activation="lrelu"),
        network_le_dm=EncoderConfig(in_chans=3, block_num=5, activation="lrelu"),
        network_d=DenoiserConfig(kind="simple_denoise", n_feats=64, n_denoise_res=4, timesteps=5),
        diffusion_schedule=ScheduleConfig(timesteps=16, apply_ldm=True),
    )


PRESETS = {
    "gopro": _gopro,
    "hide": _gopro,  # the GoPro release is evaluated on HIDE
    "realblur_j": _realblur,
    "realblur_r": _realblur,
}


def preset(name: str) -> HIDiffConfig:
    key = name.lower().replace("-", "_")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[key]()
