"""Shared helpers of the training tests."""
from pathlib import Path

import cv2
import numpy as np


def write_pairs(root: Path, count: int, size: tuple[int, int] = (40, 48), seed: int = 0) -> Path:
    """``count`` pairs of smooth random images under root/{input,target}: target sharp, input blurred."""
    rng = np.random.default_rng(seed)
    for sub in ("input", "target"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k in range(count):
        sharp = cv2.GaussianBlur((rng.random((*size, 3)) * 255).astype(np.uint8), (0, 0), 1.0)
        cv2.imwrite(str(root / "target" / f"img{k}.png"), sharp)
        cv2.imwrite(str(root / "input" / f"img{k}.png"), cv2.GaussianBlur(sharp, (0, 0), 2.0))
    return root
