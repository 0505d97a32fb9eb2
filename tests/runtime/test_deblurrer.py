"""The Deblurrer against the PyTorch model, its options, the backend choice, tiling and runtime.deblur."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from runtime_helpers import deblurrer_fixture, frame_u8, model_fixture  # noqa: F401 (fixtures)

import runtime
from engines.torch_settings import TorchSettings
from runtime import BackendError, Deblurrer, TilingRequired
from runtime.selection import parse_device


def test_output_equals_the_pytorch_model_with_the_same_z_T(model, deblurrer):
    torch.manual_seed(1)
    blur = torch.rand(2, 3, 21, 30)  # odd sizes: padding and cropping included
    noise = deblurrer.noise.expand(2, -1, -1)
    with torch.no_grad():
        expected = model(blur, noise=noise).clamp(0, 1)
    got = deblurrer.deblur_tensor(blur)
    assert got.shape == blur.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_z_T_is_seeded_shared_and_fixed(model, deblurrer):
    expected = torch.randn(deblurrer.prior_shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(deblurrer.noise, expected, rtol=0, atol=0)
    frame = frame_u8(16, 16)
    with Deblurrer(model=model, device="cpu", seed=1) as other:
        assert not np.array_equal(other.deblur(frame), deblurrer.deblur(frame))


def test_steps_must_equal_the_model_T(model):
    with pytest.raises(ValueError, match="T=8"):
        Deblurrer(model=model, device="cpu", steps=4)


@pytest.mark.parametrize("kwargs, words", [
    ({"color": "bgra"}, "color"), ({"tile": 100}, "multiple of 8"), ({"tile": 64, "tile_overlap": 32}, "overlap"),
    ({"device": "tpu"}, "device"), ({"backend": "tflite"}, "backend"), ({"precision": "int8"}, "precision"),
    ({"max_pixels": 10}, "max_pixels"), ({"torch_settings": "turbo"}, "PyTorch preset 'turbo'"),
    ({"engine_options": {"cuda_graphs": False}}, r"pass Deblurrer\(cuda_graphs=...\)"),
])
def test_bad_options_are_refused(model, kwargs, words):
    with pytest.raises(ValueError, match=words):
        Deblurrer(model=model, **{"device": "cpu", **kwargs})


def test_describe_and_backend_reason(deblurrer):
    text = deblurrer.describe()
    assert deblurrer.backend == "torch" and deblurrer.device == torch.device("cpu")
    assert "torch on cpu" in text and "plain loop" in text and "tiling" in text
    assert deblurrer.backend_reason.startswith("auto:")


def test_the_cpu_runs_the_eager_model_in_fp32_by_default(deblurrer, model):
    assert deblurrer.precision.value == "fp32" and deblurrer.torch_settings == TorchSettings()
    assert "PyTorch settings: eager" in deblurrer.describe()
    settings = TorchSettings(channels_last=True, pad_channels=True)
    with Deblurrer(model=model, device="cpu", torch_settings=settings) as other:
        assert other.torch_settings is settings  # handed through unchanged
        frame = frame_u8(16, 24)
        assert np.abs(other.deblur(frame).astype(int) - deblurrer.deblur(frame).astype(int)).max() <= 1


@pytest.mark.gpu
def test_a_pytorch_model_on_cuda_runs_fp16_in_the_fastest_form_by_default(model):
    with Deblurrer(model=model, device=0, strict=True) as d:  # engines compile on their first call: none here
        assert d.precision.value == "fp16" and d.torch_settings == TorchSettings.preset("fastest")
        assert "PyTorch settings: fastest" in d.describe()
    with Deblurrer(model=model, device=0, precision="fp32", torch_settings="eager", strict=True) as d:
        assert d.precision.value == "fp32" and d.torch_settings == TorchSettings()


def test_settings_the_device_cannot_run_are_named(model):
    with pytest.raises(BackendError, match=r"torch on cpu: failed to open: .*PyTorch settings fastest: .*CUDA device"):
        Deblurrer(model=model, device="cpu", torch_settings="fastest")


def test_max_pixels_tiles_only_large_frames(model, deblurrer):
    frame = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    with Deblurrer(model=model, device="cpu", max_pixels=32 * 32, tile_overlap=8) as budget:
        assert "when needed (max_pixels 1024), overlap 8" in budget.describe()
        small = np.ascontiguousarray(frame[:32, :32])
        np.testing.assert_array_equal(budget.deblur(small), deblurrer.deblur(small))  # within budget: whole
        assert budget.pipeline.plan(32, 32) is None and budget.pipeline.plan(40, 48) is not None
        assert budget.deblur(frame).shape == frame.shape


def test_tile_zero_refuses_frames_beyond_the_budget(model):
    with Deblurrer(model=model, device="cpu", tile=0, max_pixels=16 * 16) as d:
        with pytest.raises(TilingRequired, match="max_pixels"):
            d.deblur(frame_u8(24, 24))
        assert d.deblur(frame_u8(16, 16)).shape == (16, 16, 3)  # still usable


def test_missing_engines_folder_and_unusable_backends(model, tmp_path):
    with pytest.raises(BackendError, match="does not exist"):
        Deblurrer(engines=tmp_path / "nowhere", device="cpu")
    with pytest.raises(BackendError, match="no backend could run"):
        Deblurrer(engines=tmp_path, device="cpu")  # an empty folder: no plans, no graphs, no model


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback when no GPU is present")
def test_fallback_from_cuda_is_announced_and_strict_refuses_it(model, caplog):
    with caplog.at_level(logging.WARNING, logger="runtime"):
        with Deblurrer(model=model, device=0) as d:
            assert d.device.type == "cpu" and "no CUDA device" in d.backend_reason
    assert any("fell back" in r.message for r in caplog.records)
    with pytest.raises(BackendError, match="strict=True"):
        Deblurrer(model=model, device=0, strict=True)


def test_parse_device():
    assert parse_device(0) == torch.device("cuda", 0)
    assert parse_device("1") == torch.device("cuda", 1)
    assert parse_device("cuda") == torch.device("cuda", 0)
    assert parse_device("cpu") == torch.device("cpu")


def test_module_level_deblur_caches_one_deblurrer_per_options(model, deblurrer):
    frame = frame_u8(16, 16, seed=3)
    try:
        first = runtime.deblur(frame, model=model, device="cpu")
        runtime.deblur(frame, model=model, device="cpu")
        assert len(runtime._cache) == 1
        np.testing.assert_array_equal(first, deblurrer.deblur(frame))
    finally:
        runtime.clear_cache()
    assert not runtime._cache
