"""bench/compile_breaks.py: the Restormer and the denoising step trace as one torch.compile graph."""
from __future__ import annotations

import pytest

from bench import compile_breaks


@pytest.mark.parametrize("graph", ["restormer", "denoise_step"])
def test_graph_traces_without_breaks(graph, capsys):
    argv = ["--tiny", "--graph", graph, "--size", "64x64", "--device", "cpu"]
    assert compile_breaks.main(argv) == 0
    out = capsys.readouterr().out
    assert "1 graph(s), 0 break(s)" in out, out
