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
