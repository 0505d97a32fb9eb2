"""The one conformance suite every engine backend passes: same inputs -> same outputs, the same
named errors for bad feeds, the same lifecycle.

Backends: PyTorch and ONNX Runtime on the CPU (always), PyTorch on CUDA and ONNX Runtime's CUDA
provider on a GPU (``gpu``). All run the tiny random model of ``engine_artifacts``; the reference
is the graph modules of :mod:`hidiff.graphs` called directly, and the whole chain must reproduce
``HIDiff(blur, noise)``. TensorRT plans need a GPU and TensorRT to build: their engine is checked
against the same contracts in test_tensorrt_backend.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_artifacts import SHAPE, TOLERANCE, exported_folder, sample_feeds, tiny_model

from engines.base import EngineError
from engines.contracts import GRAPH_NAMES, graph_contracts
from engines.pipeline import Pipeline
from engines.registry import EngineSet, available_backends, open_engines
from hidiff.graphs import graph_modules

BACKENDS = [
    pytest.param(("torch", "cpu"), id="torch-cpu"),
    pytest.param(("onnxruntime", "cpu"), id="onnxruntime-cpu"),
    pytest.param(("torch", "cuda:0"), id="torch-cuda", marks=pytest.mark.gpu),
    pytest.param(("onnxruntime-cuda", "cuda:0"), id="onnxruntime-cuda", marks=pytest.mark.gpu),
]


@pytest.fixture(scope="module", params=BACKENDS)
def engine_set(request, tmp_path_factory):
    backend, device = request.param
    reason = available_backends(device)[backend]
    if reason is not None:
        pytest.skip(f"{backend} on {device}: {reason}")
    source: dict = {"model": tiny_model()} if backend == "torch" else {"artifacts": exported_folder(tmp_path_factory.getbasetemp())}
    if backend == "onnxruntime-cuda":
        source["provider_options"] = {"use_tf32": "0"}
    # cuDNN convolutions (torch and ONNX Runtime alike) default to TF32 on Ampere and later, about
    # 1e-3 off float32; the suite checks float32 itself, so TF32 is off while a GPU backend runs.
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with open_engines(backend, device=device, strict=True, **source) as engines:
            yield engines
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def on(engines: EngineSet, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.to(engines.device) for name, t in feeds.items()}


def reference(name: str, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
    module = graph_modules(tiny_model())[name]
    with torch.inference_mode():
        return module(*(feeds[n] for n in graph_contracts(*tiny_model().prior_shape)[name].input_names))


# ------------------------------------------------------------------------------------------ outputs


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_outputs_match_the_graph_modules(engine_set, name):
    feeds = sample_feeds()[name]
    out = engine_set[name].infer(on(engine_set, feeds))
    contract = engine_set[name].contract
    assert list(out) == list(contract.output_names)
    result = out[contract.output_names[0]]
    assert result.device == engine_set.device and result.dtype == torch.float32
    expected = reference(name, feeds)
    assert result.shape == expected.shape
    assert (result.cpu() - expected).abs().max().item() < TOLERANCE


def test_chain_reproduces_the_model(engine_set):
    """engines.pipeline over the engines (padding and cropping an odd-sized frame to the graphs'
    size) == HIDiff(blur, noise) with the same z_T in every batch row."""
    model = tiny_model()
    blur = sample_feeds(seed=3)["le_dm"]["blur"][..., :SHAPE[2] - 5, :SHAPE[3] - 3]
    noise = torch.randn(model.prior_shape, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        expected = model(blur, noise=noise.expand(SHAPE[0], -1, -1))
    assert engine_set.num_timesteps == model.schedule.num_timesteps
    pipeline = Pipeline(engine_set.engines, noise, engine_set.num_timesteps, backend=engine_set.backend)
    for _ in range(3):  # on CUDA the loop's second call captures a graph, the third replays it
        sharp = pipeline.run(blur.to(engine_set.device))
        assert sharp.shape == blur.shape
        assert (sharp.cpu() - expected).abs().max().item() < TOLERANCE


def test_infer_host_matches_infer(engine_set):
    feeds = sample_feeds(seed=7)["restormer"]
    host = engine_set["restormer"].infer_host({k: v.numpy() for k, v in feeds.items()})
    assert isinstance(host["sharp"], np.ndarray) and host["sharp"].dtype == np.float32
    device = engine_set["restormer"].infer(on(engine_set, feeds))["sharp"].cpu().numpy()
    np.testing.assert_allclose(host["sharp"], device, rtol=0, atol=1e-6)


def test_calls_do_not_share_outputs(engine_set):
    """A second call must not overwrite what the first returned (the runtime keeps cond while it
    loops the steps)."""
    engine = engine_set["le_dm"]
    first = engine.infer(on(engine_set, sample_feeds(seed=1)["le_dm"]))["cond"]
    kept = first.clone()
    engine.infer(on(engine_set, sample_feeds(seed=2)["le_dm"]))
    assert torch.equal(first, kept)


def test_contracts_and_prior_shape(engine_set):
    model = tiny_model()
    assert engine_set.contracts == graph_contracts(*model.prior_shape)
    assert engine_set.prior_shape == model.prior_shape
    for engine in engine_set.engines.values():
        assert engine.device == engine_set.device


# ------------------------------------------------------------------------------------------ refused feeds


def test_wrong_names_are_refused(engine_set):
    feeds = on(engine_set, sample_feeds()["restormer"])
    feeds["z"] = feeds.pop("prior")
    with pytest.raises(KeyError, match=r"restormer.*missing \['prior'\], unexpected \['z'\]"):
        engine_set["restormer"].infer(feeds)


def test_wrong_dtypes_are_refused(engine_set):
    feeds = on(engine_set, sample_feeds()["denoise_step"])
    with pytest.raises(TypeError, match=r"input 't': dtype torch.int32 received, torch.int64 expected"):
        engine_set["denoise_step"].infer({**feeds, "t": feeds["t"].int()})
    with pytest.raises(TypeError, match=r"input 'z': dtype torch.float64"):
        engine_set["denoise_step"].infer({**feeds, "z": feeds["z"].double()})


def test_wrong_shapes_are_refused(engine_set):
    feeds = on(engine_set, sample_feeds()["restormer"])
    with pytest.raises(ValueError, match=r"input 'blur': rank 3"):
        engine_set["restormer"].infer({**feeds, "blur": feeds["blur"][0]})
    with pytest.raises(ValueError, match=r"input 'blur': axis 1 is 4, expected 3"):
        engine_set["restormer"].infer({**feeds, "blur": torch.cat([feeds["blur"], feeds["blur"][:, :1]], 1)})
    with pytest.raises(ValueError, match=r"input 'prior': axis 2 is 16, expected 32"):
        engine_set["restormer"].infer({**feeds, "prior": feeds["prior"][..., :16]})
    with pytest.raises(ValueError, match=r"input 'prior': axis 0 \(batch\) is 1, but another input set batch=2"):
        engine_set["restormer"].infer({**feeds, "prior": feeds["prior"][:1]})


@pytest.mark.parametrize("height, width", [(36, 48), (32, 44)])
def test_sizes_not_multiple_of_8_are_refused(engine_set, height, width):
    blur = torch.rand(1, 3, height, width, device=engine_set.device)
    with pytest.raises(ValueError, match=r"is not a multiple of 8; pad the image first"):
        engine_set["le_dm"].infer({"blur": blur})


def test_wrong_device_is_refused(engine_set):
    other = "meta" if engine_set.device.type == "cpu" else "cpu"
    blur = torch.empty(SHAPE, device=other)
    with pytest.raises(ValueError, match=rf"input 'blur' is on {other}, engine runs on {engine_set.device}"):
        engine_set["le_dm"].infer({"blur": blur})


# ------------------------------------------------------------------------------------------ lifecycle


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_context_manager_closes_every_engine(backend, tmp_path_factory):
    source = {"model": tiny_model()} if backend == "torch" else {"artifacts": exported_folder(tmp_path_factory.getbasetemp())}
    feeds = sample_feeds()["le_dm"]
    with open_engines(backend, device="cpu", **source) as engines:
        assert not engines.closed
        engines["le_dm"].infer(feeds)
    assert engines.closed and "closed" in engines.describe()
    for name in GRAPH_NAMES:
        with pytest.raises(EngineError, match=rf"graph {name!r}: .* closed"):
            engines[name].infer(sample_feeds()[name])
    engines.close()  # twice is fine
    with engines["le_dm"] as engine:  # an engine is a context manager of its own
        assert engine is engines["le_dm"]
