"""The shipped model on whole held-out photos against independent tiles of them (session 7).

Each tile is a full model call (prior and Restormer from the tile alone, as in training on
patches), blended with 32-pixel linear ramps; z_T from seed 0:
    python docs/results/session7-2026-11-27/cpu-generalisation/tiles_vs_whole.py hidiff/weights/default.safetensors whole,t128,t192,t256
Output: tiles_vs_whole.txt beside this file.
"""
import sys
from pathlib import Path

import numpy as np
import torch

from hidiff.data.paired import folder_pairs, read_rgb
from hidiff.metrics import psnr, to_uint8
from hidiff.model import HIDiff
from hidiff.train_default import STAGE2_OPTIONS, make_test_pairs
from hidiff.training.config import load_run_config

torch.set_num_threads(2)
cfg = load_run_config(STAGE2_OPTIONS)
test_dir = Path("/tmp/exp/test")
if not (test_dir / "input").exists():
    make_test_pairs(test_dir, cfg.data.synthetic, 8)
model = HIDiff.load(sys.argv[1]).eval()


def whole(x: torch.Tensor) -> torch.Tensor:
    return model(x, generator=torch.Generator().manual_seed(0))


def starts(length: int, tile: int, overlap: int) -> list[int]:
    positions = list(range(0, max(length - tile, 0) + 1, tile - overlap))
    return positions if positions[-1] == length - tile else positions + [length - tile]


def independent_tiles(x: torch.Tensor, tile: int, overlap: int = 32) -> torch.Tensor:
    _, _, height, width = x.shape
    out, weights = torch.zeros_like(x), torch.zeros(1, 1, height, width)
    ramp = torch.linspace(0.05, 1, overlap)
    for top in starts(height, tile, overlap):
        for left in starts(width, tile, overlap):
            restored = whole(x[:, :, top:top + tile, left:left + tile])
            weight = torch.ones(1, 1, tile, tile)
            if top > 0:
                weight[:, :, :overlap, :] *= ramp[:, None]
            if top + tile < height:
                weight[:, :, -overlap:, :] *= ramp.flip(0)[:, None]
            if left > 0:
                weight[:, :, :, :overlap] *= ramp[None, :]
            if left + tile < width:
                weight[:, :, :, -overlap:] *= ramp.flip(0)[None, :]
            out[:, :, top:top + tile, left:left + tile] += restored * weight
            weights[:, :, top:top + tile, left:left + tile] += weight
    return out / weights


modes = sys.argv[2].split(",") if len(sys.argv) > 2 else ["whole", "t192", "t256"]
scores: dict[str, list[float]] = {mode: [] for mode in modes}
inputs = []
with torch.no_grad():
    for pair in folder_pairs(test_dir / "input", test_dir / "target"):
        blur, sharp = read_rgb(pair.blur), read_rgb(pair.sharp)
        x = torch.from_numpy(blur.transpose(2, 0, 1).copy()).float().div(255)[None]
        inputs.append(psnr(blur, sharp))
        for mode in modes:
            out = whole(x) if mode == "whole" else independent_tiles(x, int(mode[1:]))
            scores[mode].append(psnr(to_uint8(out[0].permute(1, 2, 0).numpy()), sharp))
        print(pair.name, blur.shape, round(inputs[-1], 2), {m: round(v[-1], 2) for m, v in scores.items()}, flush=True)
print("input", np.mean(inputs), {m: (round(np.mean(v), 3), round(np.mean(v) - np.mean(inputs), 3))
                                 for m, v in scores.items()})
