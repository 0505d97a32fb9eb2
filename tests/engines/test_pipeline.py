"""engines.pipeline: the chain against HIDiff, its stage hooks, padding, tiling decisions and the
engines' size limits (TensorRT profiles), over the PyTorch engines on the CPU."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from engine_artifacts import tiny_model

from engines.base import EngineError
from engines.contracts import IMAGE_MULTIPLE
from engines.pipeline import STAGES, FrameTooLarge, ImageLimits, Pipeline, image_limits, pad_bottom_right
from engines.tiling import Tiling, run_tiled
from engines.torch_backend import torch_engines
from hidiff.model import MULTIPLE, pad_image


@pytest.fixture(scope="module")
def engines():
    return torch_engines(tiny_model(), "cpu")


@pytest.fixture(scope="module")
def noise():
    return torch.randn(tiny_model().prior_shape, generator=torch.Generator().manual_seed(5))


def test_the_pipeline_is_hidiff_with_one_z_T_per_batch(engines, noise):
    blur = torch.rand(2, 3, 21, 30, generator=torch.Generator().manual_seed(6))  # odd sizes: pad and crop
    stages = []
    sharp = Pipeline(engines, noise, 8, backend="torch").run(blur, on_stage=stages.append)
    with torch.no_grad():
        expected = tiny_model()(blur, noise=noise.expand(2, -1, -1))
    assert sharp.shape == blur.shape and sharp.dtype == torch.float32
    torch.testing.assert_close(sharp, expected, rtol=0, atol=1e-6)
    assert stages == list(STAGES)


def test_padding_is_the_models_and_the_multiple_is_defined_once():
    assert MULTIPLE == IMAGE_MULTIPLE
    x = torch.rand(1, 3, 13, 17)
    torch.testing.assert_close(pad_bottom_right(x, 16, 24), pad_image(x)[0], rtol=0, atol=0)  # reflect
    tiny = torch.rand(1, 3, 3, 5)  # sides shorter than their padding: replicated
    padded = pad_bottom_right(tiny, 8, 8)
    assert padded.shape[-2:] == (8, 8) and torch.equal(padded[..., 7, :5], tiny[..., 2, :])
    assert pad_bottom_right(x, 8, 8) is x  # already large enough


def test_tiling_off_refuses_frames_beyond_the_budget_before_any_work(engines, noise):
    pipeline = Pipeline(engines, noise, 8, backend="torch", tiling=Tiling(tile=0, max_pixels=16 * 16))
    stages = []
    with pytest.raises(FrameTooLarge, match=r"a 20 x 16 frame \(padded 24 x 16\) cannot be run whole: max_pixels"):
        pipeline.plan(20, 16)
    with pytest.raises(FrameTooLarge, match=r"a 24 x 16 frame cannot be run whole: max_pixels is 256"):
        pipeline.run(torch.rand(1, 3, 20, 16), on_stage=stages.append)
    assert stages == []
    assert pipeline.run(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    assert pipeline.describe_tiling() == "never (tile=0: frames beyond the engines' limits raise)"


def test_a_pixel_budget_tiles_with_square_tiles_within_it(engines, noise):
    pipeline = Pipeline(engines, noise, 8, backend="torch", tiling=Tiling(max_pixels=32 * 32, overlap=8))
    assert pipeline.plan(32, 32) is None
    tiles, overlap = pipeline.plan(40, 72)
    assert overlap == 8 and {(t.height, t.width) for t in tiles} == {(32, 32)}
    assert pipeline.run(torch.rand(1, 3, 40, 72)).shape == (1, 3, 40, 72)


def test_bad_inputs_are_refused(engines, noise):
    with pytest.raises(EngineError, match=r"\['restormer'\] are missing"):
        Pipeline({k: v for k, v in engines.items() if k != "restormer"}, noise, 8, backend="torch")
    with pytest.raises(ValueError, match=r"noise z_T has shape \(2, 16, 32\); the engines' prior is \(16, 32\)"):
        Pipeline(engines, noise.expand(2, -1, -1), 8, backend="torch")


def test_image_limits_from_tensorrt_profiles():
    # TensorRT cannot run here: a plain object with the TensorRTEngine.profiles shape stands in.
    class PlanProfiles:
        profiles = [{"blur": ((1, 3, 256, 256), (1, 3, 720, 1280), (4, 3, 1088, 1920))},
                    {"blur": ((1, 3, 64, 64), (1, 3, 128, 128), (8, 3, 512, 512))}]

    limits = image_limits(PlanProfiles())
    assert limits.min_hw == (64, 64) and limits.max_hw == (1088, 1920) and limits.max_batch == 8
    assert limits.fits(1088, 1920) and not limits.fits(1096, 8)
    assert image_limits(object()) == ImageLimits()


def test_profile_limits_pad_small_frames_and_shrink_le_dms_input(noise):
    """Engines with TensorRT profiles (TensorRT cannot run here: PyTorch engines given the
    ``profiles`` attribute of TensorRTEngine stand in): a frame below the smallest input is padded
    up to it, LE_DM sees an area-downscaled copy of a frame above its largest input, and the
    Restormer tiles it."""
    engines = torch_engines(tiny_model(), "cpu")
    engines["le_dm"].profiles = [{"blur": ((1, 3, 16, 16), (1, 3, 32, 32), (2, 3, 32, 32))}]  # type: ignore[attr-defined]
    engines["restormer"].profiles = [{"blur": ((1, 3, 24, 24), (1, 3, 48, 48), (4, 3, 48, 48)),  # type: ignore[attr-defined]
                                      "prior": ((1, 16, 32),) * 3}]
    pipeline = Pipeline(engines, noise, 8, backend="torch", tiling=Tiling(overlap=8))
    assert pipeline.min_hw == (24, 24) and pipeline.max_batch == 2
    assert "Restormer profile max (48, 48)" in pipeline.describe_tiling()

    small = torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(1))
    x = pad_bottom_right(pad_image(small)[0], 24, 24)
    expected = _by_hand(engines, noise, x, x)[..., :10, :12]
    torch.testing.assert_close(pipeline.run(small), expected, rtol=0, atol=1e-6)

    large = torch.rand(1, 3, 64, 40, generator=torch.Generator().manual_seed(2))
    tiles, overlap = pipeline.plan(64, 40)  # beyond the Restormer's 48 x 48: tiled
    cond_input = F.interpolate(large, size=(32, 16), mode="area")  # scale 0.5, sides multiples of 8, >= 16
    prior = _prior(engines, noise, engines["le_dm"].infer({"blur": cond_input})["cond"])
    expected = run_tiled(lambda b, p: engines["restormer"].infer({"blur": b, "prior": p})["sharp"], large, prior,
                         tiles, overlap)
    torch.testing.assert_close(pipeline.run(large), expected, rtol=0, atol=1e-6)


def _prior(engines, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    z = noise.expand(cond.shape[0], -1, -1)
    for t in range(7, -1, -1):
        z = engines["denoise_step"].infer({"z": z, "cond": cond, "t": torch.tensor([t])})["z_prev"]
    return z


def _by_hand(engines, noise: torch.Tensor, le_dm_input: torch.Tensor, restormer_input: torch.Tensor) -> torch.Tensor:
    cond = engines["le_dm"].infer({"blur": le_dm_input})["cond"]
    return engines["restormer"].infer({"blur": restormer_input, "prior": _prior(engines, noise, cond)})["sharp"]
