"""bench.timing: trtexec's statistics of the timed iterations and the comparison with the reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import report
from bench.timing import STAT_KEYS, compare_outputs, summarize


def test_summarize_percentiles():
    values = list(range(1, 101))  # 1 .. 100
    stats = summarize(values)
    assert stats["min"] == 1 and stats["max"] == 100 and stats["mean"] == 50.5
    assert stats["median"] == 50.5
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert summarize([7.0]) == {k: 7.0 for k in STAT_KEYS}
    rng = np.random.default_rng(0)
    assert report.stats_are_ordered(summarize(rng.lognormal(size=37).tolist()))
    with pytest.raises(ValueError):
        summarize([])


def test_compare_outputs():
    a = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert compare_outputs(a, a.clone())["exact"] is True
    b = a + 0.01
    result = compare_outputs(b, a)
    assert result["psnr_db"] == pytest.approx(40.0, abs=1e-4)
    assert result["max_abs_error"] == pytest.approx(0.01, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        compare_outputs(a, a[:, :, :4])


def test_the_stage_timer_times_the_pipeline_through_its_hooks():
    """uint8 BGR frames of odd sizes (padding and cropping included) through engines.pipeline on
    the CPU: one clock mark per stage, and the output the pipeline's own."""
    from conftest import tiny_config

    from bench.inputs import ImageSize, natural_frames
    from bench.timing import STAGES, StageTimer
    from engines.pipeline import Pipeline
    from engines.torch_backend import torch_engines
    from hidiff.model import HIDiff

    torch.manual_seed(0)
    model = HIDiff(tiny_config()).eval()
    noise = torch.randn(model.prior_shape, generator=torch.Generator().manual_seed(0))
    pipeline = Pipeline(torch_engines(model, "cpu"), noise, model.schedule.num_timesteps, backend="torch")
    timer = StageTimer(pipeline)
    frames = natural_frames(ImageSize(30, 21), 2)
    timer.prepare(frames)
    output, times = timer.run_once()
    assert len(times.stages) == len(STAGES) and all(t >= 0 for t in times.stages)
    assert times.wall_ms >= sum(times.stages) * 0.99
    blur = torch.from_numpy(frames).permute(0, 3, 1, 2).flip(1).float() / 255
    with torch.no_grad():
        expected = model(blur, noise=noise.expand(2, -1, -1)).clamp(0, 1)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-5)
    assert timer.loop is pipeline.loop
    timer.release()
