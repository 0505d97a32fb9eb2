"""engines.cuda: error translation and argument checks everywhere; device properties and graph
capture on a GPU (marked ``gpu``)."""
from __future__ import annotations

import sys

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
def test_calls_without_a_driver_raise_backend_unavailable():
    with pytest.raises(BackendUnavailable, match="no usable CUDA driver or GPU"):
        cuda.device_properties(0)


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
def test_a_captured_graph_replays_its_copy():
    stream = torch.cuda.Stream()
    src = torch.zeros(256, pin_memory=True)
    dst = torch.zeros(256, pin_memory=True)
    dev = torch.empty(256, device="cuda")
    nbytes = src.numel() * src.element_size()
    kinds = rt.cudaMemcpyKind
    graph = cuda.CudaGraph()
    graph.begin(stream)
    cuda.call("cudaMemcpyAsync", dev.data_ptr(), src.data_ptr(), nbytes, kinds.cudaMemcpyHostToDevice,
              stream.cuda_stream)
    cuda.call("cudaMemcpyAsync", dst.data_ptr(), dev.data_ptr(), nbytes, kinds.cudaMemcpyDeviceToHost,
              stream.cuda_stream)
    graph.end()
    for value in (1.0, 2.0):  # a replay reads the pinned source as it is at launch time
        src.fill_(value)
        graph.launch(stream)
        stream.synchronize()
        assert (dst == value).all()
    graph.destroy()


@pytest.mark.gpu
@pytest.mark.skipif(not has_gpu, reason="needs a CUDA GPU")
def test_a_wrong_call_on_a_gpu_is_a_cuda_error_not_unavailable():
    with pytest.raises(cuda.CudaError) as info:
        cuda.call("cudaSetDevice", 10_000)
    assert not isinstance(info.value, BackendUnavailable)
    assert (info.value.api, info.value.name) == ("cudaSetDevice", "cudaErrorInvalidDevice")
