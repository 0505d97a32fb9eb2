"""A uniform average of the weights of HIDiff exports that share a starting point, evaluated on the
held-out pairs (session 7: run 9 and its continuations 10a, 10b, 11a, 11b):
    python docs/results/session7-2026-11-27/cpu-generalisation/weight_average.py OUT.safetensors RUN9 R10A R10B R11A R11B
The held-out pairs are those tiles_vs_whole.py writes to /tmp/exp/test. Output: weight_average.txt.
"""
import sys
from pathlib import Path

import numpy as np
import torch

from hidiff.data.paired import folder_pairs, read_rgb
from hidiff.metrics import psnr, to_uint8
from hidiff.model import HIDiff

torch.set_num_threads(2)
out, *members = sys.argv[1:]
models = [HIDiff.load(m) for m in members]
states = [m.state_dict() for m in models]
soup = {k: (torch.stack([s[k].float() for s in states]).mean(0) if states[0][k].is_floating_point() else states[0][k])
        for k in states[0]}
model = models[0]
model.load_state_dict(soup)
model.save(out, dtype=torch.float16)
model = HIDiff.load(out).eval()
test = Path("/tmp/exp/test")
ins, outs = [], []
with torch.no_grad():
    for pair in folder_pairs(test / "input", test / "target"):
        blur, sharp = read_rgb(pair.blur), read_rgb(pair.sharp)
        x = torch.from_numpy(blur.transpose(2, 0, 1).copy()).float().div(255)[None]
        y = model(x, generator=torch.Generator().manual_seed(0))
        ins.append(psnr(blur, sharp))
        outs.append(psnr(to_uint8(y[0].permute(1, 2, 0).numpy()), sharp))
        print(pair.name, round(ins[-1], 2), round(outs[-1], 2), flush=True)
print("soup of", len(members), "input", round(np.mean(ins), 3), "output", round(np.mean(outs), 3), "gain", round(np.mean(outs) - np.mean(ins), 3))
