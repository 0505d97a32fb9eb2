"""Validation during training: PSNR/SSIM of whole validation images as saved 8-bit RGB.

Stage 1 scores what stage 1 trains: Restormer(blur, LE(blur, sharp)) on reflect-padded images
(the official S1 ``test()`` pads both). Stage 2 scores inference itself, ``HIDiff.forward``, with
z_T from a fixed seed so successive validations are comparable.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from hidiff.data.paired import ImagePair, read_rgb
from hidiff.metrics import psnr, ssim, to_uint8
from hidiff.model import HIDiff, crop_image, pad_image

VALIDATION_SEED = 0


def _tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1] on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)[None].to(device)


@torch.no_grad()
def restore(model: HIDiff, stage: int, blur: torch.Tensor, sharp: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1] -> the stage's restoration, same shape (not clamped)."""
    if stage == 1:
        if model.le is None:
            raise ValueError("stage-1 validation needs the stage-1 encoder LE")
        h, w = blur.shape[-2:]
        blur_p, _ = pad_image(blur)
        sharp_p, _ = pad_image(sharp)
        return crop_image(model.restormer(blur_p, model.le(blur_p, sharp_p)), h, w).float()
    return model(blur, generator=generator).float()


def validate(
    model: HIDiff,
    stage: int,
    pairs: Sequence[ImagePair],
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ssim_mode: str | None = "matlab",
) -> dict[str, float]:
    """Mean PSNR (and SSIM unless ``ssim_mode`` is None) over ``pairs``; ``autocast`` makes the
    precision context. Leaves the model in eval mode: the caller restores its training modes."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(VALIDATION_SEED)
    psnrs: list[float] = []
    ssims: list[float] = []
    for pair in pairs:
        blur_img, sharp_img = read_rgb(pair.blur), read_rgb(pair.sharp)
        if blur_img.shape != sharp_img.shape:
            raise ValueError(f"validation pair {pair.name!r}: {pair.blur} and {pair.sharp} differ in size")
        with autocast():
            out = restore(model, stage, _tensor(blur_img, device), _tensor(sharp_img, device), generator)
        pred = to_uint8(out[0].permute(1, 2, 0).cpu().numpy())
        psnrs.append(psnr(pred, sharp_img))
        if ssim_mode is not None:
            ssims.append(ssim(pred, sharp_img, mode=ssim_mode))
    result = {"psnr": float(np.mean(psnrs)), "images": float(len(psnrs))}
    if ssims:
        result["ssim"] = float(np.mean(ssims))
    return result
