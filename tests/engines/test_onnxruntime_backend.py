"""ONNX Runtime backend specifics: the export folder's manifest and hashes, the graph-vs-contract
check at load, provider choice and announced fallbacks, the CUDA provider on device tensors."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import onnx
import pytest
import torch
from engine_artifacts import SHAPE, TOLERANCE, exported_folder, sample_feeds, tiny_model, write_manifest
from onnx import TensorProto, helper

from engines.artifacts import ExportManifest
from engines.base import BackendUnavailable, EngineError
from engines.contracts import GraphContract, TensorSpec, graph_contracts
from engines.onnxruntime_backend import OnnxRuntimeEngine, onnxruntime_engines
from engines.torch_backend import torch_engines


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return exported_folder(tmp_path_factory.getbasetemp())


@pytest.fixture
def copied_dir(onnx_dir, tmp_path):
    """A private copy of the export folder that a test may damage."""
    target = tmp_path / "onnx"
    shutil.copytree(onnx_dir, target)
    return target


def contracts():
    return graph_contracts(*tiny_model().prior_shape)


# ------------------------------------------------------------------------------------------ the export folder


def test_manifest_is_read(onnx_dir):
    manifest = ExportManifest.read(onnx_dir)
    assert manifest.prior_shape == tiny_model().prior_shape
    assert manifest.num_timesteps == 8
    assert sorted(manifest.graphs) == sorted(contracts())


def test_missing_manifest_says_to_export(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"manifest.json does not exist: export the ONNX graphs first"):
        onnxruntime_engines(tmp_path)


def test_malformed_manifest_is_refused(copied_dir):
    (copied_dir / "manifest.json").write_text(json.dumps({"precision": "fp32", "graphs": {}}))
    with pytest.raises(ValueError, match=r"is not a valid export manifest \(KeyError: 'model'\)"):
        onnxruntime_engines(copied_dir)


def test_changed_file_fails_its_hash(copied_dir):
    path = copied_dir / "denoise_step.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(EngineError, match=r"denoise_step.onnx \(graph 'denoise_step'\) has sha256 .* the file changed"):
        onnxruntime_engines(copied_dir)


def test_missing_graph_file_is_named(copied_dir):
    (copied_dir / "restormer.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"restormer.onnx \(graph 'restormer'"):
        onnxruntime_engines(copied_dir)


def test_recorded_contract_must_match_this_code(copied_dir):
    path = copied_dir / "manifest.json"
    data = json.loads(path.read_text())
    data["graphs"]["le_dm"]["contract"]["outputs"][0]["name"] = "condition"
    path.write_text(json.dumps(data))
    with pytest.raises(EngineError, match=r"contract recorded for graph 'le_dm' .* differs"):
        onnxruntime_engines(copied_dir)


def test_precision_of_the_folder_is_checked(onnx_dir):
    with pytest.raises(ValueError, match=r"holds fp32 graphs, fp16 was asked for"):
        onnxruntime_engines(onnx_dir, precision="fp16")


# ------------------------------------------------------------------------------------------ graph vs contract


def test_graph_of_another_contract_is_refused(onnx_dir):
    with pytest.raises(EngineError, match=r"le_dm.onnx \(graph 'restormer'\): inputs are \['blur'\], "
                                          r"the contract expects \['blur', 'prior'\]"):
        OnnxRuntimeEngine(onnx_dir / "le_dm.onnx", contracts()["restormer"])


def test_graph_of_another_prior_shape_is_refused(onnx_dir):
    other = graph_contracts(16, 64)["le_dm"]
    with pytest.raises(EngineError, match=r"output 'cond' has shape \[2, 16, 32\], .*\['batch', 16, 64\]"):
        OnnxRuntimeEngine(onnx_dir / "le_dm.onnx", other)


def test_element_type_is_checked(tmp_path):
    """A graph whose input is float64 where the contract says float32."""
    x = helper.make_tensor_value_info("blur", TensorProto.DOUBLE, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("out", TensorProto.DOUBLE, ["batch", 3, "height", "width"])
    graph = helper.make_graph([helper.make_node("Identity", ["blur"], ["out"])], "identity", [x], [y])
    path = tmp_path / "identity.onnx"
    # IR version 10: what onnxruntime >= 1.18 reads (onnx 1.23 writes 14 by default)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)
    contract = GraphContract("identity", (TensorSpec("blur", "float32", ("batch", 3, "height", "width")),),
                             (TensorSpec("out", "float32", ("batch", 3, "height", "width")),))
    with pytest.raises(EngineError, match=r"identity.onnx \(graph 'identity'\): input 'blur' has element type "
                                          r"float64, the contract expects float32"):
        OnnxRuntimeEngine(path, contract)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"graph 'le_dm': .*nothing.onnx does not exist"):
        OnnxRuntimeEngine(tmp_path / "nothing.onnx", contracts()["le_dm"])


# ------------------------------------------------------------------------------------------ providers


def test_cpu_provider_runs_without_fallback(onnx_dir):
    with OnnxRuntimeEngine(onnx_dir / "le_dm.onnx", contracts()["le_dm"], session_options={"intra_op_num_threads": 1}) as engine:
        assert engine.provider == "CPUExecutionProvider" and engine.fallback is None
        assert engine.requested_provider == "cpu"
        out = engine.infer(sample_feeds()["le_dm"])["cond"]
    assert out.shape == (SHAPE[0], *tiny_model().prior_shape)
    assert repr(engine) == "OnnxRuntimeEngine(graph='le_dm', device=cpu, provider=CPUExecutionProvider, closed)"


@pytest.mark.parametrize("provider, device, message", [
    ("bogus", "cpu", r"provider 'bogus': expected 'auto', 'cuda', 'tensorrt' or 'cpu'"),
    ("cuda", "cpu", r"provider 'cuda' needs a CUDA device"),
    ("tensorrt", "cpu", r"provider 'tensorrt' needs a CUDA device"),
])
def test_provider_must_fit_the_device(onnx_dir, provider, device, message):
    with pytest.raises(ValueError, match=message):
        OnnxRuntimeEngine(onnx_dir / "le_dm.onnx", contracts()["le_dm"], device=device, provider=provider)


def test_unknown_session_option_is_refused(onnx_dir):
    with pytest.raises(ValueError, match=r"session option 'threads' is not an attribute"):
        OnnxRuntimeEngine(onnx_dir / "le_dm.onnx", contracts()["le_dm"], session_options={"threads": 1})


def test_cpu_engine_refuses_a_cuda_stream(onnx_dir):
    with OnnxRuntimeEngine(onnx_dir / "le_dm.onnx", contracts()["le_dm"]) as engine:
        with pytest.raises(ValueError, match=r"a CUDA stream .* was given to an engine on cpu"):
            engine.infer(sample_feeds()["le_dm"], stream=1234)


def test_fp16_manifest_is_reported(copied_dir):
    """The manifest's precision is what the engines say they run (the graphs here are fp32 files,
    which is fine for ONNX Runtime on the CPU: only the TensorRT provider reads it)."""
    write_manifest(copied_dir, {n: f"{n}.onnx" for n in contracts()}, precision="fp16")
    engines = onnxruntime_engines(copied_dir, precision="fp16")
    assert {e.precision.value for e in engines.values()} == {"fp16"}


def test_cuda_graphs_are_a_cuda_provider_option(onnx_dir):
    """On the CPU provider a request for CUDA graphs is recorded as not applicable, and the
    engine runs plainly (same outputs as without the request)."""
    contract = contracts()["denoise_step"]
    asked = OnnxRuntimeEngine(onnx_dir / "denoise_step.onnx", contract, provider="cpu", cuda_graphs=True)
    plain = OnnxRuntimeEngine(onnx_dir / "denoise_step.onnx", contract, provider="cpu")
    assert not asked.uses_cuda_graph and "not of CPUExecutionProvider" in str(asked.cuda_graph_error)
    assert plain.cuda_graph_error == "not asked for (cuda_graphs=False)"
    feeds = sample_feeds()["denoise_step"]
    torch.testing.assert_close(asked.infer(feeds)["z_prev"], plain.infer(feeds)["z_prev"], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ GPU


def _cuda_provider_or_skip():
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (pip install onnxruntime-gpu)")


@pytest.fixture
def no_tf32():
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.gpu
def test_cuda_provider_on_device_tensors_matches_torch(onnx_dir, no_tf32):
    """IOBinding on CUDA tensors, a side stream given as torch stream and as raw handle."""
    _cuda_provider_or_skip()
    # TF32 off on both sides (cuDNN's default is on): the comparison is float32 against float32.
    reference = torch_engines(tiny_model(), "cuda:0")
    engines = onnxruntime_engines(onnx_dir, "cuda:0", provider="cuda", strict=True,
                                  provider_options={"use_tf32": "0"})
    side = torch.cuda.Stream()
    for name, engine in engines.items():
        assert engine.provider == "CUDAExecutionProvider" and engine.fallback is None
        feeds = {k: v.cuda() for k, v in sample_feeds()[name].items()}
        expected = next(iter(reference[name].infer(feeds).values()))
        for stream in (None, side, side.cuda_stream):
            side.wait_stream(torch.cuda.current_stream())
            got = next(iter(engine.infer(feeds, stream=stream).values()))
            torch.cuda.current_stream().wait_stream(side)
            assert got.is_cuda
            assert (got - expected).abs().max().item() < TOLERANCE
        engine.close()


@pytest.mark.gpu
def test_missing_cuda_provider_falls_back_announced(onnx_dir, caplog):
    """The CPU build of onnxruntime asked for CUDA: an announced fallback that still runs on the
    device's tensors (host copies); strict=True raises instead."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider; nothing falls back")
    contract = contracts()["le_dm"]
    with pytest.raises(BackendUnavailable, match=r"strict=True refuses to fall back to CPUExecutionProvider"):
        OnnxRuntimeEngine(onnx_dir / "le_dm.onnx", contract, device="cuda:0", provider="cuda", strict=True)
    with caplog.at_level(logging.WARNING, logger="engines"):
        engine = OnnxRuntimeEngine(onnx_dir / "le_dm.onnx", contract, device="cuda:0", provider="cuda")
    assert "falls back from CUDAExecutionProvider -> CPUExecutionProvider" in caplog.text
    assert engine.fallback is not None and engine.fallback.used == "CPUExecutionProvider"
    feeds = sample_feeds()["le_dm"]
    out = engine.infer({"blur": feeds["blur"].cuda()})["cond"]
    assert out.is_cuda
    expected = OnnxRuntimeEngine(onnx_dir / "le_dm.onnx", contract).infer(feeds)["cond"]
    np.testing.assert_allclose(out.cpu().numpy(), expected.numpy(), atol=1e-6)


@pytest.mark.gpu
def test_cuda_graph_replays_match_plain_runs(onnx_dir):
    """The denoising step through ONNX Runtime's own CUDA graphs: every t gives the plain
    session's result, from fresh inputs each call (no stale buffers), on a side stream too. (The
    test graphs take the batch they were exported with; the GoPro export's dynamic batch ran
    graphs per batch size in bench/latency.py.)"""
    _cuda_provider_or_skip()
    graphed = onnxruntime_engines(onnx_dir, "cuda:0", provider="cuda", strict=True)["denoise_step"]
    plain = onnxruntime_engines(onnx_dir, "cuda:0", provider="cuda", strict=True, cuda_graphs=False)["denoise_step"]
    assert graphed.uses_cuda_graph, graphed.cuda_graph_error
    assert not plain.uses_cuda_graph
    generator = torch.Generator().manual_seed(0)
    prior = tiny_model().prior_shape
    side = torch.cuda.Stream()
    outputs = []
    batch = SHAPE[0]
    for _ in range(2):
        for t in range(3):
            z, cond = (torch.randn((batch, *prior), generator=generator).cuda() for _ in range(2))
            feeds = {"z": z, "cond": cond, "t": torch.tensor([t], device="cuda")}
            expected = plain.infer(feeds)["z_prev"]
            side.wait_stream(torch.cuda.current_stream())
            got = graphed.infer(feeds, stream=side)["z_prev"]
            torch.cuda.current_stream().wait_stream(side)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
            outputs.append(got)
    assert not torch.equal(outputs[0], outputs[1])  # t and z changed, so did the result
    graphed.close()
    plain.close()
