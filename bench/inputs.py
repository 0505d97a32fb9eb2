"""What bench/latency.py and its sibling scripts run on: frame sizes, the model (files, release
presets with random weights, a tiny CI model, the embedded default) and natural input frames."""
from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from engines.contracts import pad_to_multiple
from hidiff.config import DenoiserConfig, EncoderConfig, HIDiffConfig, RestormerConfig, preset
from hidiff.model import HIDiff

NATURAL_IMAGES = ("astronaut", "chelsea", "coffee")


@dataclass(frozen=True)
class ImageSize:
    """A frame size as video people write it: ``WxH`` (``1280x720`` is 720 rows of 1280 pixels)."""

    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> "ImageSize":
        parts = text.lower().strip().split("x")
        try:
            width, height = (int(p) for p in parts)
        except ValueError as exc:
            raise ValueError(f"size {text!r}: expected WIDTHxHEIGHT such as 1280x720") from exc
        if width < 1 or height < 1:
            raise ValueError(f"size {text!r}: width and height must be positive")
        return cls(width, height)

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def padded(self) -> tuple[int, int]:
        """(height, width) the engines receive: each side reflect-padded up to a multiple of 8."""
        return pad_to_multiple(self.height), pad_to_multiple(self.width)


def engine_restormer(config: HIDiffConfig, size: ImageSize, device: str,
                     dtype: torch.dtype) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """``config``'s Restormer as the PyTorch engines' "channels-last" preset prepares it (channels
    padded for tensor cores, ``dtype``, channels-last memory; random weights) and one frame's
    inputs on ``device``: a blurry frame of ``size`` padded to the Restormer's multiple as the
    pipeline pads it, and unit Gaussian prior tokens. ``device="meta"`` gives shapes only."""
    from engines.torch_backend import prepare_model
    from engines.torch_settings import TorchSettings

    with torch.device("meta" if device == "meta" else "cpu"):
        model = HIDiff(config).eval()
    restormer = prepare_model(model, torch.device(device), dtype, TorchSettings.preset("channels-last")).restormer
    blur = torch.rand(1, 3, *size.padded, device=device, dtype=dtype)
    prior = torch.randn(1, *model.prior_shape, device=device, dtype=dtype)
    return restormer, blur.to(memory_format=torch.channels_last), prior


def tiny_config() -> HIDiffConfig:
    """A HI-Diff of 250 thousand parameters (prior (B, 16, 32)) that runs in milliseconds: CI and smoke runs."""
    return HIDiffConfig(
        network_g=RestormerConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2), embed_dim=8),
        network_le=EncoderConfig(in_chans=6, embed_dim=8, block_num=1),
        network_le_dm=EncoderConfig(embed_dim=8, block_num=1),
        network_d=DenoiserConfig(in_channel=32, out_channel=32, inner_channel=32, block_num=3),
    )


@dataclass(frozen=True)
class ModelChoice:
    """Where the model comes from: our weights file, the official release files (``net_g``,
    ``net_le_dm``, ``net_d``, optional ``options``), random weights of a release's architecture
    (``preset``) or of :func:`tiny_config` (``tiny``); nothing: the embedded default model."""

    weights: Path | None = None
    net_g: Path | None = None
    net_le_dm: Path | None = None
    net_d: Path | None = None
    options: Path | None = None
    preset: str | None = None
    tiny: bool = False

    def __post_init__(self) -> None:
        files = [f for f in ("weights", "net_g", "net_le_dm", "net_d", "options") if getattr(self, f) is not None]
        random = [flag for flag, on in (("--preset", self.preset is not None), ("--tiny", self.tiny)) if on]
        if len(random) > 1 or (random and files):
            given = random + [f"--{f.replace('_', '-')}" for f in files]
            raise ValueError(f"choose one model source; got {' '.join(given)}")

    @property
    def is_default(self) -> bool:
        return self == ModelChoice()


def load_model(choice: ModelChoice, seed: int) -> tuple[HIDiff, str]:
    """The model (float32, eval, on the CPU) and a one-line description of where it came from.

    Files go through :class:`export.model_source.ModelSource`, as in the export command (same
    flags, same errors). Random weights (``preset``, ``tiny``) are drawn from ``seed`` so two runs
    time the same network.
    """
    if choice.preset is not None or choice.tiny:
        config = tiny_config() if choice.tiny else preset(choice.preset or "gopro")
        with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's RNG
            torch.manual_seed(seed)
            model = HIDiff(config).eval()
        name = "tiny" if choice.tiny else f"preset {choice.preset}"
        return model, f"{name}, random weights (seed {seed})"
    from export.model_source import ModelSource

    source = ModelSource.from_options(choice.net_g, choice.net_le_dm, choice.net_d, choice.options, choice.weights)
    described = {
        "official": f"official net_g {choice.net_g}, net_le_dm {choice.net_le_dm}, net_d {choice.net_d}",
        "weights": f"weights {choice.weights}",
    }.get(source.kind, "embedded default model (hidiff.default_model())")
    return source.load(), described


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model flags shared with bench/accuracy.py (the export command's, plus random weights)."""
    group = parser.add_argument_group("model (default: the embedded model, hidiff.default_model())")
    group.add_argument("--weights", type=Path, default=None, help="our safetensors checkpoint (HIDiff.save)")
    group.add_argument("--net-g", type=Path, default=None, help="official net_g.pth (with --net-le-dm and --net-d)")
    group.add_argument("--net-le-dm", type=Path, default=None, help="official net_le_dm.pth")
    group.add_argument("--net-d", type=Path, default=None, help="official net_d.pth")
    group.add_argument("--options", type=Path, default=None, help="official option file (YAML) for the --net-* files")
    group.add_argument("--preset", default=None, help="random weights of a release's architecture: gopro, realblur_j, ...")
    group.add_argument("--tiny", action="store_true", help="a tiny random model (tests, smoke runs)")


def model_choice_from_args(args: argparse.Namespace) -> ModelChoice:
    return ModelChoice(weights=args.weights, net_g=args.net_g, net_le_dm=args.net_le_dm, net_d=args.net_d,
                       options=args.options, preset=args.preset, tiny=args.tiny)


def natural_frames(size: ImageSize, batch: int, first: str = "astronaut") -> np.ndarray:
    """(batch, H, W, 3) uint8 BGR frames of natural images, as OpenCV would deliver them.

    Natural content, not noise, so FP16 error figures mean what they would on real frames.
    Frames cycle through astronaut, chelsea and coffee starting at ``first`` (scikit-image's
    bundled images); without scikit-image, a drawn scene stands in (see :func:`input_description`).
    """
    order = NATURAL_IMAGES[NATURAL_IMAGES.index(first):] + NATURAL_IMAGES[:NATURAL_IMAGES.index(first)]
    frames = []
    for i in range(batch):
        rgb = _source_image(order[i % len(order)])
        # INTER_AREA to shrink, cubic to enlarge: neither adds aliasing that a natural frame lacks.
        shrink = size.width * size.height < rgb.shape[0] * rgb.shape[1]
        resized = cv2.resize(rgb, (size.width, size.height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        frames.append(cv2.cvtColor(resized, cv2.COLOR_RGB2BGR))
    return np.stack(frames)


def input_description(first: str) -> str:
    if importlib.util.find_spec("skimage") is None:
        return "drawn scenes (scikit-image is not installed: pip install scikit-image for its natural images)"
    return ",".join(NATURAL_IMAGES) + f" (skimage.data, first: {first})"


def _source_image(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB: scikit-image's image ``name``, or a drawn scene seeded by the name."""
    try:
        from skimage import data as skimage_data
    except ImportError:
        return _drawn_scene(512, 512, seed=NATURAL_IMAGES.index(name))
    return np.asarray(getattr(skimage_data, name)())


def _drawn_scene(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth shading, hard-edged shapes and fine texture: the mix of flat areas, edges and
    detail a photograph has (not white noise, which no deblurring network sees)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    image = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        image[..., c] = 0.5 + 0.3 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    for _ in range(12):
        colour = tuple(float(v) for v in rng.uniform(0, 1, 3))
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.circle(image, (x0, y0), int(rng.integers(8, max(9, width // 6))), colour, -1, lineType=cv2.LINE_AA)
        else:
            x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
    image += 0.04 * cv2.GaussianBlur(rng.standard_normal((height, width, 3)).astype(np.float32), (0, 0), 1.0)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
