"""The first and the hundredth output of one frame are bitwise equal on the PyTorch backend: eager
and compiled on the CPU, and in its fastest CUDA form (compiled FP16, fused Triton kernels, a CUDA
graph per shape), where the first call of a shape once took another path than the later ones; and
on ONNX Runtime's CPU provider. The AOTInductor backend's checks are in
tests/export/test_aoti_package.py (CPU) and tests/engines/test_aoti_backend.py (CUDA)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_artifacts import exported_folder, sample_feeds, tiny_model

from engines.torch_backend import torch_engines
from runtime.deblurrer import Deblurrer


def frame(seed: int = 11) -> np.ndarray:
    """(21, 27, 3) uint8: a size the runtime pads (to 24 x 32)."""
    return (torch.rand(21, 27, 3, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8).numpy()


def first_and_later(deblurrer: Deblurrer, calls: int = 100) -> tuple[np.ndarray, list[np.ndarray]]:
    image = frame()
    first = deblurrer.deblur(image)
    return first, [deblurrer.deblur(image) for _ in range(calls - 1)]


def test_eager_on_the_cpu():
    # The three engines, not the whole pipeline: a hundred frames through the Deblurrer's eleven
    # engine calls each would take seconds on a shared 2-core machine.
    engines = torch_engines(tiny_model(), "cpu")
    for graph, feeds in sample_feeds(shape=(1, 3, 16, 24)).items():
        first = engines[graph].infer(feeds)
        for _ in range(99):
            assert all(torch.equal(out, first[name]) for name, out in engines[graph].infer(feeds).items()), graph


def test_onnx_runtime_on_the_cpu(tmp_path_factory):
    from engines.onnxruntime_backend import onnxruntime_engines

    engines = onnxruntime_engines(exported_folder(tmp_path_factory.getbasetemp()), "cpu", provider="cpu", strict=True)
    try:
        for graph, feeds in sample_feeds().items():
            first = engines[graph].infer(feeds)
            for _ in range(99):
                assert all(torch.equal(out, first[name]) for name, out in engines[graph].infer(feeds).items()), graph
    finally:
        for engine in engines.values():
            engine.close()


@pytest.mark.slow  # compiles the three graphs with inductor's C++ backend (1-2 minutes on 2 cores)
def test_compiled_on_the_cpu():
    with Deblurrer(model=tiny_model(), backend="torch", device="cpu", torch_settings="compiled") as deblurrer:
        first, later = first_and_later(deblurrer)
        assert deblurrer.engines["restormer"].settings.compile_mode == "default"
    assert all(np.array_equal(out, first) for out in later)


@pytest.mark.gpu
def test_the_fastest_cuda_form():
    with Deblurrer(model=tiny_model(), backend="torch", device=0, precision="fp16",
                   torch_settings="fastest", strict=True) as deblurrer:
        first, later = first_and_later(deblurrer)
        assert deblurrer.engines["restormer"].cuda_graph_error is None
        assert deblurrer.pipeline.loop.graph_error is None
    assert all(np.array_equal(out, first) for out in later)
