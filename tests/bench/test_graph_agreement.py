"""bench/graph_agreement.py: each graph against eager FP32 on the same inputs."""
from __future__ import annotations

import math

import pytest
import torch

from bench import graph_agreement


def test_agreement_measures_the_difference():
    want = torch.zeros(2, 3)
    got = torch.full((2, 3), 0.1)
    a = graph_agreement.agreement(got, want + 1)
    assert a["max_abs"] == pytest.approx(0.9)
    assert a["rel_rms"] == pytest.approx(0.9)
    assert a["psnr_db"] == pytest.approx(10 * math.log10(1 / 0.81))
    assert graph_agreement.agreement(want, want)["psnr_db"] == math.inf


def test_the_cpu_run_compares_every_graph(capsys):
    """The same engines as the reference (torch FP32 on the CPU) agree exactly; a frame size that is
    no multiple of 8 is padded for the image graphs."""
    assert graph_agreement.main(["--tiny", "--backend", "torch", "--precision", "fp32", "--device", "cpu",
                                 "--size", "50x30"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("torch ")]
    assert [row[1] for row in rows] == ["le_dm/cond", "denoise_step/z_prev", "restormer/sharp"]
    assert all(float(row[2]) == 0.0 for row in rows) and rows[-1][-1] == "inf"
