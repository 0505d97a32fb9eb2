"""The shipped model's gain on blurred copies of its own training photos (session 7).

3 pairs of each colour training photo (skimage_sharp_images without rocket), the held-out test
pairs' recipe and seed, whole photos, z_T from seed 0:
    python docs/results/session7-2026-11-27/cpu-generalisation/training_photo_gain.py hidiff/weights/default.safetensors
Output: training_photo_gain.txt beside this file.
"""
import sys
from pathlib import Path

import numpy as np
import torch

from hidiff.data.paired import folder_pairs, read_rgb
from hidiff.data.synthetic_blur import make_pairs, skimage_sharp_images
from hidiff.metrics import psnr, to_uint8
from hidiff.model import HIDiff
from hidiff.train_default import STAGE2_OPTIONS, TEST_SEED
from hidiff.training.config import load_run_config
from hidiff.training.data import blur_recipe

torch.set_num_threads(2)
cfg = load_run_config(STAGE2_OPTIONS)
pairs_dir = Path("/tmp/exp/trainpairs")
if not (pairs_dir / "input").exists():
    photos = [photo for photo in skimage_sharp_images() if photo[0] != "rocket"]
    print([(name, image.shape) for name, image in photos])
    make_pairs(photos, pairs_dir, per_image=3, seed=TEST_SEED, recipe=blur_recipe(cfg.data.synthetic))
model = HIDiff.load(sys.argv[1]).eval()
inputs, outputs = [], []
with torch.no_grad():
    for pair in folder_pairs(pairs_dir / "input", pairs_dir / "target"):
        blur, sharp = read_rgb(pair.blur), read_rgb(pair.sharp)
        x = torch.from_numpy(blur.transpose(2, 0, 1).copy()).float().div(255)[None]
        out = model(x, generator=torch.Generator().manual_seed(0))
        before, after = psnr(blur, sharp), psnr(to_uint8(out[0].permute(1, 2, 0).numpy()), sharp)
        inputs.append(before)
        outputs.append(after)
        print(pair.name, round(before, 2), round(after, 2), round(after - before, 2), flush=True)
print("mean", np.mean(inputs), np.mean(outputs), np.mean(outputs) - np.mean(inputs))
