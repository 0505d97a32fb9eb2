"""bench/kernel_counters.py: the launches Nsight Compute counts (running them needs a GPU)."""
from __future__ import annotations

import pytest
import torch

from bench.kernel_counters import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_without_a_gpu_it_says_so():
    with pytest.raises(SystemExit) as exited:
        main(["--size", "320x180"])
    assert exited.value.code == 2


@pytest.mark.gpu
def test_every_counted_launch_runs(capsys):
    """Each case runs (autotuned, then once inside the profiler range) and is named in order."""
    assert main(["--size", "320x180"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("counted launch:") == 16
    assert "gated_dwconv3x3 level1 512ch" in printed and "cudnn depthwise level3 576ch" in printed
    assert "gdfn_block level1 96ch" in printed and "mdta pass 1 level3 192ch 4 heads" in printed
