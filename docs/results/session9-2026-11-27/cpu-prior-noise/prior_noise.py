"""The shipped model's held-out PSNR with three priors (session 9, this project's CPU): z_T from
seed 0 (what `hidiff.evaluate`'s runs use), the mean of 16 priors from 16 draws of z_T, and z_T = 0.
    python docs/results/session9-2026-11-27/cpu-prior-noise/prior_noise.py
Output: prior_noise.txt beside this file.
"""
from pathlib import Path

import numpy as np
import torch

from hidiff.data.paired import folder_pairs, read_rgb
from hidiff.metrics import psnr, to_uint8
from hidiff.model import HIDiff, crop_image, pad_image
from hidiff.train_default import STAGE2_OPTIONS, make_test_pairs
from hidiff.training.config import load_run_config

torch.set_num_threads(2)
cfg = load_run_config(STAGE2_OPTIONS)
test_dir = Path("/tmp/exp/test")
if not (test_dir / "input").exists():
    make_test_pairs(test_dir, cfg.data.synthetic, 8)
model = HIDiff.load("hidiff/weights/default.safetensors").eval()
res = {k: [] for k in ("input", "seed0", "mean16", "zero")}
with torch.no_grad():
    for pair in folder_pairs(test_dir / "input", test_dir / "target"):
        blur, sharp = read_rgb(pair.blur), read_rgb(pair.sharp)
        x = torch.from_numpy(blur.transpose(2, 0, 1).copy()).float().div(255.0)[None]
        h, w = x.shape[2:]
        xp, _ = pad_image(x)
        cond = model.encode(xp)
        g = torch.Generator().manual_seed(0)
        zs = model.make_noise(16, g)
        priors = model.sample_prior(cond.expand(16, *cond.shape[1:]), zs)
        variants = {"seed0": priors[:1], "mean16": priors.mean(0, keepdim=True),
                    "zero": model.sample_prior(cond, torch.zeros_like(zs[:1]))}
        res["input"].append(psnr(blur, sharp))
        for k, prior in variants.items():
            out = crop_image(model.decode(xp, prior), h, w)
            res[k].append(psnr(to_uint8(out[0].permute(1, 2, 0).numpy()), sharp))
        print(pair.name, {k: round(v[-1], 2) for k, v in res.items()}, flush=True)
print({k: round(float(np.mean(v)), 3) for k, v in res.items()})
