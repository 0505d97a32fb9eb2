"""engines.cuda: error translation and argument checks everywhere; allocation, copies, events,
graphs and torch views on a GPU (marked ``gpu``)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from engines import cuda
from engines.base import BackendUnavailable

rt = cuda.cudart()
E = rt.cudaError_t
SUCCESS = E.cudaSuccess

has_gpu = torch.cuda.is_available()
no_gpu = pytest.mark.skipif(has_gpu, reason="checks what happens on a machine without a CUDA GPU")


# ----------------------------------------------------------------------------- without a GPU


def test_check_returns_nothing_one_value_or_a_tuple():
    assert cuda.check((SUCCESS,)) is None
    assert cuda.check((SUCCESS, 7)) == 7
    assert cuda.check((SUCCESS, 1, 2)) == (1, 2)


def test_check_names_the_call_and_cudas_message():
    with pytest.raises(cuda.CudaError) as info:
        cuda.check((E.cudaErrorMemoryAllocation, None), "cudaMalloc")
    err = info.value
    assert not isinstance(err, BackendUnavailable)  # out of memory is a real failure, not "no GPU"
    assert (err.api, err.code, err.name) == ("cudaMalloc", int(E.cudaErrorMemoryAllocation), "cudaErrorMemoryAllocation")
    assert str(err).startswith("cudaMalloc failed: cudaErrorMemoryAllocation (2): out of memory")


@pytest.mark.parametrize("code", ["cudaErrorNoDevice", "cudaErrorInsufficientDriver", "cudaErrorStubLibrary"])
def test_errors_meaning_no_driver_or_gpu_are_backend_unavailable(code):
    with pytest.raises(cuda.NoCudaDevice) as info:
        cuda.check((getattr(E, code),), "cudaGetDeviceCount")
    assert isinstance(info.value, BackendUnavailable) and isinstance(info.value, cuda.CudaError)
    assert code in str(info.value) and "no usable CUDA driver or GPU" in str(info.value)


@no_gpu
@pytest.mark.parametrize("make", [
    lambda: cuda.device_properties(0),
    lambda: cuda.Stream(),
    lambda: cuda.Event(),
    lambda: cuda.DeviceBuffer(16),
    lambda: cuda.PinnedBuffer(16),
], ids=["device_properties", "Stream", "Event", "DeviceBuffer", "PinnedBuffer"])
def test_calls_without_a_driver_raise_backend_unavailable(make):
    with pytest.raises(BackendUnavailable, match="no usable CUDA driver or GPU"):
        make()


def test_missing_cuda_bindings_is_backend_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)  # what an uninstalled package looks like
    cuda.cudart.cache_clear()
    try:
        with pytest.raises(BackendUnavailable, match=r"pip install 'cuda-bindings>=12.6'"):
            cuda.device_count()
    finally:
        monkeypatch.undo()
        cuda.cudart.cache_clear()


def test_stream_handles_of_every_kind():
    class TorchLike:
        cuda_stream = 0x1234

    assert cuda.stream_handle(None) == 0
    assert cuda.stream_handle(42) == 42
    assert cuda.stream_handle(TorchLike()) == 0x1234
    borrowed = cuda.Stream.wrap(TorchLike())
    assert cuda.stream_handle(borrowed) == 0x1234
    borrowed.destroy()  # not owned: no CUDA call, works without a driver
    with pytest.raises(ValueError, match="destroyed"):
        borrowed.handle


def test_copies_check_sizes_and_layout_before_calling_cuda():
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda.memcpy_htod_async(0x1000, np.zeros(8, np.float32)[::2], stream=0)
    with pytest.raises(ValueError, match="64 bytes requested, host side holds 32"):
        cuda.memcpy_dtoh_async(np.zeros(8, np.float32), 0x1000, stream=0, nbytes=64)
    with pytest.raises(TypeError, match="numpy array or PinnedBuffer"):
        cuda.memcpy_htod_async(0x1000, [1, 2, 3], stream=0)  # type: ignore[arg-type]


def test_graphs_refuse_the_legacy_default_stream():
    with pytest.raises(ValueError, match="default stream"):
        cuda.CudaGraph().begin(0)


# ----------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu, reason="needs a CUDA GPU")
def test_device_properties_agree_with_torch():
    info = cuda.device_properties(0)
    props = torch.cuda.get_device_properties(0)
    assert info.name == props.name
    assert info.compute_capability == torch.cuda.get_device_capability(0)
    assert info.total_memory == props.total_memory
    assert info.sm_count == props.multi_processor_count
    with pytest.raises(ValueError, match="this machine has devices 0.."):
        cuda.device_properties(cuda.device_count())


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu, reason="needs a CUDA GPU")
def test_pinned_round_trip_through_the_device():
    data = np.random.default_rng(0).standard_normal((64, 33)).astype(np.float32)
    with cuda.Stream() as stream, cuda.PinnedBuffer(data.shape, np.float32) as src, \
            cuda.PinnedBuffer(data.shape, np.float32) as dst, cuda.DeviceBuffer(data.shape, np.float32) as dev:
        src.array[...] = data
        cuda.memcpy_htod_async(dev, src, stream)
        cuda.memcpy_dtoh_async(dst, dev, stream)
        stream.synchronize()
        np.testing.assert_array_equal(dst.array, data)
        # Pageable numpy arrays work too (the copy is then effectively synchronous).
        out = np.empty_like(data)
        cuda.memcpy_dtoh_async(out, dev, stream)
        stream.synchronize()
        np.testing.assert_array_equal(out, data)


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu, reason="needs a CUDA GPU")
def test_torch_views_a_device_buffer_without_a_copy():
    buf = cuda.DeviceBuffer((4, 5), np.float32)
    view = torch.as_tensor(buf, device="cuda")
    assert view.data_ptr() == buf.ptr and view.shape == (4, 5) and view.dtype == torch.float32
    view.fill_(3.0)
    torch.cuda.synchronize()
    host = np.zeros((4, 5), np.float32)
    with cuda.Stream() as stream:
        cuda.memcpy_dtoh_async(host, buf, stream)
        stream.synchronize()
    assert (host == 3.0).all()
    del view
    buf.free()


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu, reason="needs a CUDA GPU")
def test_events_time_work_on_a_wrapped_torch_stream():
    torch_stream = torch.cuda.Stream()
    stream = cuda.Stream.wrap(torch_stream)
    assert stream.handle == torch_stream.cuda_stream
    a = torch.randn(2048, 2048, device="cuda")
    with cuda.Event() as start, cuda.Event() as end:
        start.record(stream)
        with torch.cuda.stream(torch_stream):
            for _ in range(10):
                a = a @ a.T / 2048
        end.record(stream)
        end.synchronize()
        elapsed = start.elapsed_ms(end)
    assert 0.0 < elapsed < 10_000.0
    stream.destroy()  # borrowed: torch's stream stays usable
    torch_stream.synchronize()


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu, reason="needs a CUDA GPU")
def test_a_captured_graph_replays_its_copy():
    with cuda.Stream() as stream, cuda.PinnedBuffer(256, np.float32) as src, \
            cuda.PinnedBuffer(256, np.float32) as dst, cuda.DeviceBuffer(256, np.float32) as dev:
        graph = cuda.CudaGraph()
        graph.begin(stream)
        cuda.memcpy_htod_async(dev, src, stream)
        cuda.memcpy_dtoh_async(dst, dev, stream)
        graph.end()
        for value in (1.0, 2.0):  # a replay reads the pinned source as it is at launch time
            src.array[...] = value
            graph.launch(stream)
            stream.synchronize()
            assert (dst.array == value).all()
        graph.destroy()


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu, reason="needs a CUDA GPU")
def test_a_wrong_call_on_a_gpu_is_a_cuda_error_not_unavailable():
    with pytest.raises(cuda.CudaError) as info:
        cuda.call("cudaSetDevice", 10_000)
    assert not isinstance(info.value, BackendUnavailable)
    assert (info.value.api, info.value.name) == ("cudaSetDevice", "cudaErrorInvalidDevice")
