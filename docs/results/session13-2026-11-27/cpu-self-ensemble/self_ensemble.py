"""The shipped model's held-out PSNR with geometric self-ensemble (session 13, this project's CPU):
the mean of the outputs for the 8 flips/transpositions of the blurry photo (each undone), against
the plain output. Both with z_T from seed 0, as `hidiff.evaluate`'s runs.
    python docs/results/session13-2026-11-27/cpu-self-ensemble/self_ensemble.py
Output: self_ensemble.txt beside this file.
"""
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
model = HIDiff.load("hidiff/weights/default.safetensors").eval()


def transforms(k: int):
    """(forward, inverse) of the k-th of the 8 symmetries of the square on (B, C, H, W)."""
    def forward(x):
        x = x.transpose(2, 3) if k & 4 else x
        return torch.rot90(x, k & 3, (2, 3))

    def inverse(x):
        x = torch.rot90(x, -(k & 3), (2, 3))
        return x.transpose(2, 3) if k & 4 else x
    return forward, inverse


res = {k: [] for k in ("input", "plain", "ensemble8")}
with torch.no_grad():
    for pair in folder_pairs(test_dir / "input", test_dir / "target"):
        blur, sharp = read_rgb(pair.blur), read_rgb(pair.sharp)
        x = torch.from_numpy(blur.transpose(2, 0, 1).copy()).float().div(255.0)[None]
        outs = []
        for k in range(8):
            forward, inverse = transforms(k)
            outs.append(inverse(model(forward(x), generator=torch.Generator().manual_seed(0))))
        res["input"].append(psnr(blur, sharp))
        res["plain"].append(psnr(to_uint8(outs[0][0].permute(1, 2, 0).numpy()), sharp))
        mean = torch.stack(outs).mean(0)
        res["ensemble8"].append(psnr(to_uint8(mean[0].permute(1, 2, 0).numpy()), sharp))
        print(pair.name, {k: round(v[-1], 2) for k, v in res.items()}, flush=True)
print({k: round(float(np.mean(v)), 3) for k, v in res.items()})
