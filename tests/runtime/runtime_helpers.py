"""Shared by the runtime tests: the tiny random HI-Diff of tests/conftest.py, a CPU Deblurrer made
once per module (import ``model_fixture`` / ``deblurrer_fixture``: pytest knows them as ``model``
and ``deblurrer``, so test parameters of those names shadow no imported name), and smooth test frames.

Not a conftest.py: tests/conftest.py is imported as the module ``conftest`` by other test folders,
and a second conftest here would shadow it for the folders collected after this one."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_config

from hidiff.model import HIDiff


def make_tiny_model(seed: int = 0) -> HIDiff:
    torch.manual_seed(seed)
    return HIDiff(tiny_config()).eval()


@pytest.fixture(scope="module", name="model")
def model_fixture() -> HIDiff:
    return make_tiny_model()


@pytest.fixture(scope="module", name="deblurrer")
def deblurrer_fixture(model):
    from runtime import Deblurrer

    with Deblurrer(model=model, device="cpu") as d:
        yield d


def frame_u8(height: int = 24, width: int = 40, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth random frame (a blurred look, not white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.random((max(2, height // 4), max(2, width // 4), channels), dtype=np.float32)
    import cv2

    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, channels)
    return np.round(big * 255).astype(np.uint8)
