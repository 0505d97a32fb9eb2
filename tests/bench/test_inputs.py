"""bench.inputs: frame sizes as video people write them, and natural input frames."""
from __future__ import annotations

import numpy as np
import pytest

from bench.inputs import ImageSize, natural_frames


def test_image_size_parsing():
    size = ImageSize.parse("1920x1080")
    assert (size.width, size.height, size.padded, size.label) == (1920, 1080, (1080, 1920), "1920x1080")
    assert ImageSize.parse("1278X719").padded == (720, 1280)  # reflect-padded up to multiples of 8
    for bad in ("1920", "axb", "0x10", "1x2x3"):
        with pytest.raises(ValueError):
            ImageSize.parse(bad)


def test_natural_frames_are_bgr_uint8_of_the_size():
    frames = natural_frames(ImageSize(40, 24), 4)
    assert frames.shape == (4, 24, 40, 3) and frames.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1])  # astronaut, then chelsea
    assert np.array_equal(frames[0], frames[3])  # the cycle of three images restarts
    assert frames.std() > 20  # natural content, not a flat frame
