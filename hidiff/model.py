"""HI-Diff: the prior-guided Restormer, the latent encoders, the denoiser and the schedule, tied.

Inference, as the official ``test()``:
    1. check the input, reflect-pad H and W to multiples of 8
    2. c = LE_DM(blur)
    3. z_T ~ N(0, I) with c's shape (or the caller's ``noise``)
    4. for t = T-1 .. 0: eps = denoiser(z_t, c, t + 1); z_{t-1} = schedule.step(z_t, eps, t)
    5. sharp = Restormer(blur, z_0), cropped back to H x W
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from hidiff.checkpoint import (
    load_safetensors,
    load_strict,
    read_official,
    read_safetensors_header,
    save_safetensors,
    shape_mismatches,
    state_shapes,
)
from hidiff.config import HIDiffConfig, from_official_options
from hidiff.denoiser import build_denoiser
from hidiff.latent_encoder import LatentEncoder
from hidiff.restormer import PriorGuidedRestormer
from hidiff.schedule import DiffusionSchedule

MULTIPLE = PriorGuidedRestormer.multiple  # from its downsamplings; engines.contracts.IMAGE_MULTIPLE must agree


def check_image(blur: Any, name: str = "blur") -> None:
    """Raise TypeError/ValueError unless ``blur`` is a (B, 3, H, W) floating tensor with data."""
    if not isinstance(blur, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, 3, H, W), got {type(blur).__name__}")
    if not blur.is_floating_point():
        raise TypeError(
            f"{name} has dtype {blur.dtype}; expected a floating tensor in [0, 1] "
            "(convert uint8 images with .float() / 255)"
        )
    if blur.dim() != 4:
        raise ValueError(f"{name} has shape {tuple(blur.shape)} (rank {blur.dim()}); expected (B, 3, H, W)")
    if blur.shape[1] != 3:
        raise ValueError(f"{name} has {blur.shape[1]} channels (shape {tuple(blur.shape)}); expected 3 (RGB)")
    if blur.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(blur.shape)}); expected B, H, W >= 1")


def pad_amounts(height: int, width: int, multiple: int = MULTIPLE) -> tuple[int, int]:
    return (-height) % multiple, (-width) % multiple


def pad_image(x: torch.Tensor, multiple: int = MULTIPLE) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad bottom and right to multiples of ``multiple`` (the official test-time padding).

    A side shorter than its padding cannot be reflected; it is replicated instead (the official
    code fails there).
    """
    h, w = x.shape[-2:]
    ph, pw = pad_amounts(h, w, multiple)
    if ph == 0 and pw == 0:
        return x, (0, 0)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (ph, pw)


def crop_image(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return x[..., :height, :width]


class HIDiff(nn.Module):
    """The whole model. ``model(blur, noise=None, generator=None)`` deblurs (B, 3, H, W) in [0, 1]."""

    def __init__(self, config: HIDiffConfig = HIDiffConfig(), with_stage1_encoder: bool = False):
        super().__init__()
        self.config = config
        self.restormer = PriorGuidedRestormer(config.network_g)
        self.le_dm = LatentEncoder(config.network_le_dm)
        self.denoiser = build_denoiser(config.network_d)
        # LE (stage 1) is only needed to train; inference never runs it.
        self.le = LatentEncoder(config.network_le) if with_stage1_encoder else None
        self.schedule = DiffusionSchedule.from_config(config.diffusion_schedule)

    @property
    def prior_shape(self) -> tuple[int, int]:
        return self.config.prior_tokens, self.config.prior_channels

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # Keep the schedule's tables on the module's device (they are float32 constants, never cast).
        super()._apply(fn, recurse)
        device = next(self.parameters()).device
        self.schedule = self.schedule.to(device)
        return self

    # -- the three stages, each also one exported graph -------------------------------------
    def encode(self, blur: torch.Tensor) -> torch.Tensor:
        """c = LE_DM(blur): (B, 3, H, W), H and W multiples of 8 -> (B, N, C')."""
        return self.le_dm(blur)

    def denoise_step(self, z: torch.Tensor, cond: torch.Tensor, t: int) -> torch.Tensor:
        """z_t -> z_{t-1}."""
        network_t = torch.full((z.shape[0],), self.schedule.network_time(t), device=z.device, dtype=torch.long)
        eps = self.denoiser(z, cond, network_t)
        return self.schedule.step(z, eps, t)

    def sample_prior(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Run the T reverse steps from z_T = ``noise``: returns z_0 (B, N, C')."""
        z = noise
        for t in self.schedule.timesteps():
            z = self.denoise_step(z, cond, t)
        return z

    def decode(self, blur: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return self.restormer(blur, prior)

    # -- inference --------------------------------------------------------------------------
    def make_noise(self, batch: int, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """z_T ~ N(0, I) of shape (batch, N, C'). Drawn on the generator's device, then moved."""
        gen_device = generator.device if generator is not None else device
        z = torch.randn((batch, *self.prior_shape), generator=generator, device=gen_device, dtype=torch.float32)
        return z.to(device=device, dtype=dtype)

    def forward(self, blur: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """blur (B, 3, H, W) float in [0, 1], any H, W; noise z_T (B, N, C') or drawn from
        ``generator``. Returns the sharp image (B, 3, H, W) in blur's dtype (not clamped)."""
        # 1. check the input
        check_image(blur)
        param = next(self.parameters())
        b, _, h, w = blur.shape
        if noise is not None:
            want = (b, *self.prior_shape)
            if not isinstance(noise, torch.Tensor) or tuple(noise.shape) != want:
                got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
                raise ValueError(f"noise has shape {got}; expected {want} (z_T for this batch)")
        x = blur.to(device=param.device, dtype=param.dtype)
        # 2. pad to the multiple of 8
        x, _ = pad_image(x)
        # 3. condition from the blurry image
        cond = self.encode(x)
        # 4. z_T, then the T reverse steps
        z_T = noise.to(cond) if noise is not None else self.make_noise(b, generator, cond.device, cond.dtype)
        prior = self.sample_prior(cond, z_T)
        # 5. the prior-guided Restormer, cropped back
        sharp = self.decode(x, prior)
        return crop_image(sharp, h, w).to(blur.dtype)

    # -- weights ----------------------------------------------------------------------------
    @classmethod
    def from_official(cls, net_g: str | Path, net_le_dm: str | Path, net_d: str | Path,
                      options: str | Path | Mapping[str, Any] | None = None,
                      net_le: str | Path | None = None) -> "HIDiff":
        """Load the official release files; ``options`` is an official option file (path or
        parsed dict), None for the GoPro release's sizes. Strict: every key must fit."""
        config = from_official_options(options) if options is not None else HIDiffConfig()
        model = cls(config, with_stage1_encoder=net_le is not None)
        load_strict(model.restormer, read_official(net_g), f"net_g ({net_g})")
        load_strict(model.le_dm, read_official(net_le_dm), f"net_le_dm ({net_le_dm})")
        load_strict(model.denoiser, read_official(net_d), f"net_d ({net_d})")
        if net_le is not None:
            assert model.le is not None
            load_strict(model.le, read_official(net_le), f"net_le ({net_le})")
        return model.eval()

    def save(self, path: str | Path, dtype: torch.dtype | None = None, **extra_metadata: Any) -> None:
        """One safetensors file with the configuration embedded (written atomically)."""
        state = self.state_dict()
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_safetensors(path, state, {"config": self.config.to_dict(), **extra_metadata})

    @classmethod
    def load(cls, path: str | Path) -> "HIDiff":
        """A model saved by :meth:`save`; weights stored in float16 come back as float32.

        The file's header is checked before anything is allocated: its embedded configuration
        must lie within :mod:`hidiff.config`'s bounds, and its tensors must have exactly the
        shapes of the network that configuration describes (built on the ``meta`` device, which
        allocates nothing). A PyTorch ``.pth`` gets a pointer to :meth:`from_official`.
        """
        shapes, meta = read_safetensors_header(path)
        if not isinstance(meta.get("config"), Mapping):
            raise ValueError(f"{path} has no embedded configuration (a file written by HIDiff.save has one)")
        try:
            config = HIDiffConfig.from_dict(meta["config"])  # type: ignore[arg-type]
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: the embedded configuration is refused: {exc}") from exc
        with_stage1_encoder = any(k.startswith("le.") for k in shapes)
        with torch.device("meta"):
            skeleton = cls(config, with_stage1_encoder=with_stage1_encoder)
        mismatch = shape_mismatches(state_shapes(skeleton), shapes, str(path))
        if mismatch is not None:
            raise mismatch
        tensors, _ = load_safetensors(path)
        model = cls(config, with_stage1_encoder=with_stage1_encoder)
        state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
        load_strict(model, state, str(path))
        return model.eval()

    def num_parameters(self, part: str | None = None) -> int:
        module = self if part is None else getattr(self, part)
        return sum(p.numel() for p in module.parameters())
