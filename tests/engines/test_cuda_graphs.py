"""engines.cuda_graphs.ShapeGraphs and the PyTorch backend's cuda_graphs option: capture on a
shape's first call (whose output is the replay's, like every later one), replay equal to the
plain run, plain calls inside an outer capture, the limit on captured shapes, and a capture that
fails falling back with its reason."""
from __future__ import annotations

import pytest
import torch
from engine_artifacts import sample_feeds, tiny_model

from engines.cuda_graphs import ShapeGraphs
from engines.torch_backend import torch_engines
from engines.torch_settings import TorchSettings


def test_a_cpu_device_is_refused():
    with pytest.raises(ValueError, match=r"work: CUDA graphs need a CUDA device, got cpu"):
        ShapeGraphs(lambda x: (x,), torch.device("cpu"), "work")


def test_the_torch_backend_refuses_cuda_graphs_on_the_cpu():
    with pytest.raises(ValueError, match=r"cuda_graphs need\(s\) a CUDA device, got cpu"):
        torch_engines(tiny_model(), "cpu", settings=TorchSettings(cuda_graphs=True))


def test_a_plain_engine_says_why_it_has_no_graphs():
    assert torch_engines(tiny_model(), "cpu")["restormer"].cuda_graph_error == "not asked for (cuda_graphs=False)"


class _Counted:
    """x -> (2x + 1, x.sum()), counting the Python calls (a replay makes none)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        return x * 2 + 1, x.sum()


@pytest.mark.gpu
def test_the_first_call_captures_and_every_call_replays():
    fn = _Counted()
    graphs = ShapeGraphs(fn, torch.device("cuda:0"), "work")
    x = torch.randn(4, 8, device="cuda")
    first = graphs(x)
    assert graphs.captured == 1 and graphs.error is None and fn.calls == 2  # the warm-up run and the capture
    kept = first[0].clone()  # a static buffer: the next replay overwrites it
    torch.testing.assert_close(kept, x * 2 + 1)
    calls = fn.calls
    for _ in range(3):
        y = torch.randn(4, 8, device="cuda")
        doubled, total = graphs(y)
        torch.testing.assert_close(doubled, y * 2 + 1)
        torch.testing.assert_close(total, y.sum())
    assert fn.calls == calls  # replays: no Python call of fn
    assert graphs(y)[0].data_ptr() == doubled.data_ptr() == first[0].data_ptr()  # static outputs, the first one too


@pytest.mark.gpu
def test_the_first_output_is_the_replay_even_where_a_plain_run_rounds_otherwise():
    """A plain run may pick other kernels than the captured one (cuDNN and cuBLAS algorithms,
    autotuned tiles) and round differently; the first call's output must still be the graph's."""
    def rounds_otherwise_outside_a_capture(x: torch.Tensor) -> tuple[torch.Tensor]:
        if torch.cuda.is_current_stream_capturing():
            return (x * 3.0,)
        return (x * 3.0 + 1e-5 * x,)  # within the replay check's tolerance, not bitwise equal

    graphs = ShapeGraphs(rounds_otherwise_outside_a_capture, torch.device("cuda:0"), "work")
    x = torch.rand(64, 64, device="cuda") + 1.0
    first = graphs(x)[0].clone()
    later = [graphs(x)[0].clone() for _ in range(99)]
    assert graphs.error is None and graphs.captured == 1
    assert all(torch.equal(first, out) for out in later)


@pytest.mark.gpu
def test_each_signature_has_its_own_graph_up_to_the_limit():
    graphs = ShapeGraphs(_Counted(), torch.device("cuda:0"), "work", max_graphs=2)
    for rows in (2, 3, 4):
        x = torch.randn(rows, 8, device="cuda")
        for _ in range(3):
            torch.testing.assert_close(graphs(x)[0], x * 2 + 1)
    assert graphs.captured == 2 and graphs.error is None  # the third shape runs plainly
    strided = torch.randn(8, 2, device="cuda").t()  # same shape as (2, 8), other strides: another signature
    for _ in range(2):
        torch.testing.assert_close(graphs(strided)[0], strided * 2 + 1)
    assert graphs.captured == 2


@pytest.mark.gpu
def test_inside_an_outer_capture_the_call_is_recorded_plainly():
    fn = _Counted()
    graphs = ShapeGraphs(fn, torch.device("cuda:0"), "work")
    x = torch.randn(4, 8, device="cuda")
    graphs(x)  # the first call: captured
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        graphs(x)  # warm-up for the outer capture (and this object's own capture)
    torch.cuda.current_stream().wait_stream(side)
    outer = torch.cuda.CUDAGraph()
    static = x.clone()
    with torch.cuda.graph(outer):
        out, _ = graphs(static)
    static.copy_(torch.full_like(x, 3.0))
    outer.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, torch.full_like(x, 7.0))


@pytest.mark.gpu
def test_a_capture_that_fails_falls_back_and_says_why():
    def syncs(x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x * float(x.abs().max().item()),)  # a host read: not capturable

    graphs = ShapeGraphs(syncs, torch.device("cuda:0"), "work")
    x = torch.randn(4, 8, device="cuda")
    expected = x * x.abs().max()
    for _ in range(3):
        torch.testing.assert_close(graphs(x)[0], expected)
    assert graphs.captured == 0
    assert graphs.error is not None and graphs.error.startswith("capture failed") and "plain calls instead" in graphs.error


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graphed_engines_equal_plain_engines(precision):
    model = tiny_model()
    plain = torch_engines(model, "cuda:0", precision, TorchSettings(channels_last=True))
    graphed = torch_engines(model, "cuda:0", precision, TorchSettings(channels_last=True, cuda_graphs=True))
    feeds = {name: {k: v.cuda() for k, v in f.items()} for name, f in sample_feeds().items()}
    for name, engine in graphed.items():
        want = plain[name].infer(feeds[name])
        for _ in range(3):
            got = engine.infer(feeds[name])
            for key in want:
                torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)
        assert engine.cuda_graph_error is None, engine.cuda_graph_error
        assert engine._graphs is not None and engine._graphs.captured == 1
        assert "cuda_graphs=True" in repr(engine)
