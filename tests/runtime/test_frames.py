"""Frame contracts: every accepted type, layout and dtype comes back as it came in, and bad
frames raise named errors that leave the Deblurrer working (tiny random model, CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from runtime_helpers import deblurrer_fixture, frame_u8, model_fixture  # noqa: F401 (fixtures)

from runtime import DeblurError, FrameTypeError, FrameValueError, NonFiniteOutput
from runtime.frames import inspect_frame


def test_bgr_uint8_round_trip_and_determinism(deblurrer):
    frame = frame_u8(24, 40)
    out = deblurrer.deblur(frame)
    assert isinstance(out, np.ndarray) and out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, deblurrer.deblur(frame.copy()))  # same frame, same output
    assert np.abs(out.astype(int) - frame.astype(int)).mean() > 0  # the model did something
    assert deblurrer(frame) is not None  # __call__


def test_rgb_order_is_the_reverse_of_bgr(model, deblurrer):
    from runtime import Deblurrer

    frame = frame_u8(16, 24, seed=1)
    with Deblurrer(model=model, device="cpu", color="rgb") as rgb:
        out_rgb = rgb.deblur(frame[..., ::-1])  # also a negative-stride view
    np.testing.assert_array_equal(deblurrer.deblur(frame), out_rgb[..., ::-1])


def test_float32_frame_matches_uint8_path(deblurrer):
    frame = frame_u8(16, 24, seed=2)
    out_f = deblurrer.deblur(frame.astype(np.float32) / 255)
    assert out_f.dtype == np.float32 and out_f.shape == frame.shape
    assert out_f.min() >= 0.0 and out_f.max() <= 1.0
    out_u8 = deblurrer.deblur(frame)
    # uint8 output is the float output rounded to nearest
    assert np.abs(np.round(out_f * 255) - out_u8).max() <= 1


def test_grayscale_runs_as_three_equal_channels(deblurrer):
    gray = frame_u8(16, 24, channels=1, seed=3)[..., 0]
    out = deblurrer.deblur(gray)
    assert out.shape == gray.shape and out.dtype == np.uint8
    colour = deblurrer.deblur(np.repeat(gray[..., None], 3, axis=2).astype(np.float32) / 255)
    expected = np.round(colour.mean(axis=2) * 255)
    assert np.abs(expected - out).max() <= 1
    assert deblurrer.deblur(gray[..., None]).shape == (16, 24, 1)


def test_alpha_passes_through_unchanged(deblurrer):
    bgr = frame_u8(16, 24, seed=4)
    alpha = np.arange(16 * 24, dtype=np.uint8).reshape(16, 24)
    out = deblurrer.deblur(np.dstack([bgr, alpha]))
    assert out.shape == (16, 24, 4)
    np.testing.assert_array_equal(out[..., 3], alpha)
    np.testing.assert_array_equal(out[..., :3], deblurrer.deblur(bgr))


def test_batch_array_equals_frame_by_frame(deblurrer):
    batch = np.stack([frame_u8(16, 24, seed=s) for s in range(3)])
    out = deblurrer.deblur(batch)
    assert out.shape == batch.shape and out.dtype == np.uint8
    for i in range(3):
        np.testing.assert_array_equal(out[i], deblurrer.deblur(batch[i]))


def test_list_of_mixed_sizes_keeps_order(deblurrer):
    frames = [frame_u8(16, 24, seed=5), frame_u8(20, 12, seed=6), frame_u8(16, 24, seed=7),
              frame_u8(20, 12, seed=8)[..., 0]]
    out = deblurrer.deblur(frames)
    assert isinstance(out, list) and len(out) == 4
    for got, frame in zip(out, frames):
        np.testing.assert_array_equal(got, deblurrer.deblur(frame))


def test_max_batch_splits_without_changing_results(model, deblurrer):
    from runtime import Deblurrer

    batch = np.stack([frame_u8(16, 16, seed=s) for s in range(3)])
    with Deblurrer(model=model, device="cpu", max_batch=2) as small:
        np.testing.assert_array_equal(small.deblur(batch), deblurrer.deblur(batch))


def test_torch_tensors_keep_type_device_and_dtype(deblurrer):
    frame = frame_u8(16, 24, seed=9)
    out = deblurrer.deblur(torch.from_numpy(frame))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.device.type == "cpu"
    np.testing.assert_array_equal(out.numpy(), deblurrer.deblur(frame))
    batch = torch.from_numpy(np.stack([frame, frame])).float() / 255
    out_b = deblurrer.deblur(batch)
    assert out_b.shape == batch.shape and out_b.dtype == torch.float32


def test_cupy_arrays_round_trip(deblurrer):
    cupy = pytest.importorskip("cupy")
    frame = frame_u8(16, 24, seed=10)
    out = deblurrer.deblur(cupy.asarray(frame))
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(out), deblurrer.deblur(frame))


@pytest.mark.parametrize("bad, error, words", [
    (None, FrameValueError, "cv2.imread"),
    (np.zeros((16, 16, 3), np.float64), FrameTypeError, "float64"),
    (np.zeros((16, 16, 3), np.int16), FrameTypeError, "int16"),
    (np.zeros((16, 16, 2), np.uint8), FrameValueError, "(16, 16, 2)"),
    (np.zeros((3, 16, 24), np.uint8), FrameValueError, "channels-first"),
    (np.zeros((0, 16, 3), np.uint8), FrameValueError, "empty"),
    ([np.zeros((8, 8, 3), np.uint8), "x"], FrameTypeError, "frame 1 of the list"),
    ("frame.png", FrameTypeError, "str"),
])
def test_bad_frames_are_refused_by_name(deblurrer, bad, error, words):
    with pytest.raises(error, match=None) as info:
        deblurrer.deblur(bad)
    assert words in str(info.value)
    assert isinstance(info.value, DeblurError)


@pytest.mark.parametrize("value, words", [(np.nan, "NaN or Inf"), (np.inf, "NaN or Inf"), (200.0, "divide by 255")])
def test_bad_float_values_are_refused_and_the_deblurrer_survives(deblurrer, value, words):
    frame = np.full((16, 16, 3), 0.5, np.float32)
    frame[3, 4, 1] = value
    with pytest.raises(FrameValueError, match=words):
        deblurrer.deblur(frame)
    assert deblurrer.deblur(np.full((16, 16, 3), 0.5, np.float32)).shape == (16, 16, 3)


def test_nan_output_is_an_error_not_a_frame():
    from runtime_helpers import make_tiny_model

    from runtime import Deblurrer

    broken = make_tiny_model()
    with torch.no_grad():
        next(broken.restormer.parameters()).fill_(float("nan"))  # weights that overflowed in training
    with Deblurrer(model=broken, device="cpu") as d:
        with pytest.raises(NonFiniteOutput, match="NaN/Inf"):
            d.deblur(frame_u8(16, 16))


def test_inspect_reports_layouts():
    assert inspect_frame(np.zeros((5, 7), np.uint8)).channels == 1
    spec = inspect_frame(np.zeros((2, 5, 7, 4), np.float32))
    assert (spec.batch, spec.height, spec.width, spec.channels, spec.dtype) == (2, 5, 7, 4, "float32")
