"""bench/int8_accuracy.py's chain on the CPU: the runtime's pipeline over the engines it is given,
recording every graph's feeds (the calibration inputs). The quantization itself is a benchmark."""
from __future__ import annotations

import numpy as np
import torch
from conftest import tiny_config

from bench.int8_accuracy import _deblur, _Recording
from engines.torch_backend import torch_engines
from hidiff.model import HIDiff


def test_the_chain_is_the_models_and_records_every_feed():
    torch.manual_seed(0)
    model = HIDiff(tiny_config()).eval()
    steps = model.schedule.num_timesteps
    recorders = {name: _Recording(engine) for name, engine in torch_engines(model, "cpu").items()}
    blur = np.random.default_rng(0).random((1, 3, 24, 32), dtype=np.float32)
    noise = np.random.default_rng(1).standard_normal((1, *model.prior_shape)).astype(np.float32)
    got = _deblur(recorders, blur, noise, steps)
    with torch.no_grad():
        want = model(torch.from_numpy(blur), torch.from_numpy(noise))[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert [len(recorders[name].feeds) for name in ("le_dm", "denoise_step", "restormer")] == [1, steps, 1]
    assert set(recorders["denoise_step"].feeds[0]) == {"z", "cond", "t"}
    assert all(isinstance(v, np.ndarray) for v in recorders["restormer"].feeds[0].values())
