"""The backend table: availability with reasons, opening by name, the EngineSet, and that the
registry imports no backend library until one is asked for."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from engine_artifacts import exported_folder, sample_feeds, tiny_model

from engines.registry import BACKENDS, EngineSet, available_backends, open_engines


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return exported_folder(tmp_path_factory.getbasetemp())


def test_cpu_availability():
    reasons = available_backends("cpu")
    assert set(reasons) == set(BACKENDS)
    assert reasons["torch"] is None and reasons["onnxruntime"] is None and reasons["onnxruntime-cpu"] is None
    assert reasons["tensorrt"] == "TensorRT runs on CUDA devices only"
    assert reasons["onnxruntime-cuda"] == "the cuda provider needs a CUDA device"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the reasons on a machine without a GPU")
def test_cuda_availability_without_gpu_says_why():
    reasons = available_backends("cuda:0")
    for name in ("torch", "onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "tensorrt"):
        assert reasons[name] is not None and "sees no CUDA GPU" in reasons[name]
    assert reasons["onnxruntime-cpu"] == "the CPU provider runs on device='cpu'"


def test_availability_checks_artifacts(tmp_path, onnx_dir):
    assert available_backends("cpu", tmp_path / "absent")["onnxruntime"] == f"artifacts folder {tmp_path / 'absent'} does not exist"
    assert available_backends("cpu", tmp_path)["onnxruntime"] == f"no *.onnx in {tmp_path}"
    shutil.copy(onnx_dir / "le_dm.onnx", tmp_path)
    assert "no manifest.json" in available_backends("cpu", tmp_path)["onnxruntime"]
    ready = available_backends("cpu", onnx_dir)
    assert ready["onnxruntime"] is None and ready["torch"] is None  # torch reads no artifacts


def test_not_a_device_is_refused():
    with pytest.raises(ValueError, match=r"device 'gpu0': expected a CUDA index, 'cuda', 'cuda:N', 'cpu' or a torch.device"):
        available_backends("gpu0")


@pytest.mark.parametrize("backend, kwargs, error, message", [
    ("tflite", {}, ValueError, r"unknown backend 'tflite'; expected one of \['aoti', 'onnxruntime', 'onnxruntime-cpu'"),
    ("torch", {}, ValueError, r"backend 'torch' runs a PyTorch model: pass model=HIDiff"),
    ("onnxruntime", {}, ValueError, r"backend 'onnxruntime' runs exported ONNX graphs .*: pass artifacts=FOLDER"),
    ("onnxruntime", {"artifacts": "/nonexistent/x"}, FileNotFoundError, r"artifacts folder /nonexistent/x does not exist"),
    ("torch", {"model": "MODEL", "precision": "fp16"}, ValueError, r"float16 only on CUDA"),
    ("torch", {"model": "MODEL", "precision": "fp8"}, ValueError, r"unknown precision 'fp8'"),
])
def test_open_refuses_with_a_reason(backend, kwargs, error, message):
    if kwargs.get("model") == "MODEL":
        kwargs = {**kwargs, "model": tiny_model()}
    with pytest.raises(error, match=message):
        open_engines(backend, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_tensorrt_needs_cuda(tmp_path):
    with pytest.raises(ValueError, match=r"backend 'tensorrt' runs on CUDA devices, device='cpu' was given"):
        open_engines("tensorrt", artifacts=tmp_path, device="cpu")


def test_torch_engine_set_from_a_weights_file(tmp_path):
    path = tmp_path / "tiny.safetensors"
    tiny_model().save(path)
    with open_engines("torch", model=path) as engines:
        assert isinstance(engines, EngineSet)
        assert (engines.backend, engines.device, engines.precision.value) == ("torch", torch.device("cpu"), "fp32")
        assert engines.describe() == f"torch on cpu, fp32, from {path}, T=8"
        assert engines.prior_shape == (16, 32) and list(engines) == ["le_dm", "denoise_step", "restormer"]
        out = engines["le_dm"].infer(sample_feeds()["le_dm"])["cond"]
    expected = open_engines("torch", model=tiny_model())["le_dm"].infer(sample_feeds()["le_dm"])["cond"]
    assert torch.equal(out, expected)


def test_onnxruntime_engine_set_describes_its_provider(onnx_dir):
    with open_engines("onnxruntime-cpu", artifacts=onnx_dir) as engines:
        assert engines.backend == "onnxruntime-cpu"
        assert engines.num_timesteps == 8 and engines.manifest is not None
        assert engines.describe() == f"onnxruntime-cpu on cpu, fp32, from {onnx_dir}, provider CPUExecutionProvider, T=8"
        assert engines.fallbacks == []


def test_onnxruntime_precision_mismatch_is_refused(onnx_dir):
    with pytest.raises(ValueError, match=r"holds fp32 graphs, fp16 was asked for"):
        open_engines("onnxruntime", artifacts=onnx_dir, precision="fp16")


def test_engine_set_needs_all_three_graphs():
    engines = open_engines("torch", model=tiny_model())
    with pytest.raises(Exception, match=r"lacks graphs \['restormer'\]"):
        EngineSet({k: v for k, v in engines.engines.items() if k != "restormer"}, "torch", torch.device("cpu"),
                  engines.precision)


def test_registry_imports_no_backend_library():
    """What the runtime does (ask, then open torch) must not import onnxruntime or tensorrt."""
    code = ("import sys, engines; from engines.registry import available_backends; available_backends('cpu'); "
            "print(sorted(m for m in ('onnxruntime', 'tensorrt', 'onnx') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
