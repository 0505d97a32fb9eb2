"""Deblurrer.stream: every frame, in order, equal to deblur() frame by frame; on CUDA the pipelined
path, the CUDA-graph loop and device tensors without host copies."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from runtime_helpers import deblurrer_fixture, frame_u8, make_tiny_model, model_fixture  # noqa: F401 (fixtures)

from engines.torch_settings import TorchSettings
from runtime import Deblurrer, FrameValueError


def _video(count: int, height: int = 24, width: int = 32):
    for i in range(count):
        yield frame_u8(height, width, seed=100 + i)


def test_stream_on_cpu_returns_every_frame_in_order(deblurrer):
    frames = list(_video(4, 16, 24))
    frames.insert(2, frames[0][..., 0])  # a grayscale frame in the middle
    out = list(deblurrer.stream(iter(frames)))
    assert len(out) == len(frames)
    for got, frame in zip(out, frames):
        np.testing.assert_array_equal(got, deblurrer.deblur(frame))


def test_stream_raises_at_a_bad_frame(deblurrer):
    frames = [frame_u8(16, 16), None]
    results = deblurrer.stream(frames)
    assert next(results).shape == (16, 16, 3)
    with pytest.raises(FrameValueError, match="frame 1 of the stream"):
        next(results)


@pytest.fixture(scope="module")
def cuda_deblurrer():
    # FP32 (channels-last by default on CUDA): comparable with the CPU model, and nothing compiles.
    with Deblurrer(model=make_tiny_model(), device=0, precision="fp32", strict=True) as d:
        yield d


@pytest.mark.gpu
def test_cuda_graph_loop_equals_the_plain_loop(cuda_deblurrer):
    assert "CUDA graph" in cuda_deblurrer.describe()
    with Deblurrer(model=make_tiny_model(), device=0, precision="fp32", cuda_graphs=False) as plain:
        assert "plain loop" in plain.describe()
        for batch in (1, 3):
            for _ in range(3):  # the first call of a batch size captures its graph, the later ones replay it
                blur = torch.rand(batch, 3, 40, 56, device="cuda")
                torch.testing.assert_close(cuda_deblurrer.deblur_tensor(blur), plain.deblur_tensor(blur),
                                           rtol=1e-5, atol=1e-5)
    assert cuda_deblurrer.pipeline.loop.graph_error is None and cuda_deblurrer.pipeline.loop.captured == 2


@pytest.mark.gpu
def test_engine_graphs_and_fused_kernels_keep_every_frame():
    """The fastest form's kernels and engine graphs (eager here: compiling is the benchmark's)
    through the runtime: a video's frames, each equal to the plain FP16 engines' within float16
    rounding, none overwritten by the next through the engines' static CUDA-graph outputs."""
    fast_settings = TorchSettings.preset("fastest").replace(compile_mode=None)
    frames = [frame_u8(40, 56, seed=300 + i) for i in range(4)]
    with Deblurrer(model=make_tiny_model(), device=0, precision="fp16", backend="torch", strict=True,
                   torch_settings=fast_settings) as fast, \
            Deblurrer(model=make_tiny_model(), device=0, precision="fp16", backend="torch", strict=True,
                      torch_settings="channels-last") as plain:
        got = list(fast.stream(iter(frames)))
        want = [plain.deblur(f) for f in frames]
        assert all(e.cuda_graph_error is None for e in fast.engines.engines.values())
    for g, w in zip(got, want):
        assert np.abs(g.astype(int) - w.astype(int)).max() <= 2  # 8-bit output of two float16 computations
    assert len({g.tobytes() for g in got}) == len(frames)


@pytest.mark.gpu
def test_cuda_matches_the_cpu_model(cuda_deblurrer):
    blur = torch.rand(1, 3, 32, 40)
    model = make_tiny_model()
    with torch.no_grad():
        expected = model(blur, noise=cuda_deblurrer.noise.cpu()[None]).clamp(0, 1)
    torch.testing.assert_close(cuda_deblurrer.deblur_tensor(blur), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
def test_stream_on_cuda_equals_deblur_per_frame(cuda_deblurrer):
    frames = list(_video(9))
    frames[4] = frames[4].astype(np.float32) / 255  # another dtype mid-stream: its own buffers
    frames[6] = frame_u8(16, 40, seed=7)  # and another size
    out = list(cuda_deblurrer.stream(iter(frames)))
    assert len(out) == len(frames)
    for got, frame in zip(out, frames):
        assert got.dtype == frame.dtype and got.shape == frame.shape
        np.testing.assert_array_equal(got, cuda_deblurrer.deblur(frame))


@pytest.mark.gpu
def test_stream_on_cuda_keeps_device_memory_flat(cuda_deblurrer):
    def run(count: int) -> int:
        for _ in cuda_deblurrer.stream(_video(count, 48, 64)):
            pass
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()

    run(4)  # warm: graphs, buffers, allocator pools
    first = run(10)
    assert run(40) <= first + 1024 * 1024


@pytest.mark.gpu
def test_cuda_tensors_stay_on_the_device(cuda_deblurrer):
    frame = torch.from_numpy(frame_u8(32, 48)).cuda()
    expected = cuda_deblurrer.deblur(frame.cpu().numpy())
    cuda_deblurrer.deblur(frame)  # warm
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        out = cuda_deblurrer.deblur(frame)
        torch.cuda.synchronize()
    assert isinstance(out, torch.Tensor) and out.device == frame.device and out.dtype == torch.uint8
    np.testing.assert_array_equal(out.cpu().numpy(), expected)
    # No frame-sized copy between host and device: only the per-frame health check (4 floats) comes back.
    frame_bytes = frame.numel()
    copies = [e for e in prof.events() if "Memcpy" in e.name and ("HtoD" in e.name or "DtoH" in e.name)]
    big = [e.name for e in copies if getattr(e, "bytes", 0) and e.bytes >= frame_bytes // 2]
    assert not big, big
    assert len(copies) <= 2, [e.name for e in copies]
    out_stream = list(cuda_deblurrer.stream([frame, frame]))
    assert all(o.device == frame.device for o in out_stream)
