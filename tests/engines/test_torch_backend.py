"""PyTorch backend specifics: devices, precision, settings, the caller's model left alone, streams,
CUDA graphs, fp16 against fp32 on a natural image, torch.compile."""
from __future__ import annotations

import math

import pytest
import torch
from engine_artifacts import TOLERANCE, sample_feeds, tiny_model

from engines.base import BackendUnavailable, caller_stream, parse_device
from engines.contracts import graph_contracts
from engines.torch_backend import TorchEngine, torch_engines
from engines.torch_settings import TorchSettings
from hidiff.graphs import graph_modules


def test_fp16_on_cpu_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"precision fp16 on cpu: the PyTorch backend runs float16 only on CUDA "
                                         r"devices; use precision='fp32' on the CPU, or device='cuda'"):
        torch_engines(tiny_model(), "cpu", "fp16")


def test_the_callers_model_is_not_changed():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engines = torch_engines(model, "cpu")
    module = engines["restormer"].module
    assert module is not None and next(module.parameters()) is not next(model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_not_a_model_is_refused():
    with pytest.raises(TypeError, match=r"model must be a hidiff.HIDiff, got dict"):
        torch_engines({}, "cpu")  # type: ignore[arg-type]


def test_module_on_another_device_is_refused():
    module = graph_modules(tiny_model())["le_dm"]
    contract = graph_contracts(*tiny_model().prior_shape)["le_dm"]
    meta = torch.nn.Linear(2, 2, device="meta")
    module.add_module("stray", meta)
    with pytest.raises(ValueError, match=r"graph 'le_dm': the module has tensors on \['meta'\], the engine runs on cpu"):
        TorchEngine(module, contract, "cpu")


@pytest.mark.parametrize("device, error, message", [
    ("tpu", ValueError, r"device 'tpu': expected a CUDA index, 'cuda', 'cuda:N', 'cpu' or a torch.device"),
    (True, ValueError, r"device True"),
    ("mps", ValueError, r"only 'cpu' and CUDA devices are supported"),
])
def test_bad_devices_are_refused(device, error, message):
    with pytest.raises(error, match=message):
        parse_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_gpu_is_unavailable():
    with pytest.raises(BackendUnavailable, match=r"device cuda requested, but torch .* sees no CUDA GPU"):
        torch_engines(tiny_model(), "cuda")


def test_cpu_engine_refuses_a_stream():
    engine = torch_engines(tiny_model(), "cpu")["le_dm"]
    with pytest.raises(ValueError, match=r"a CUDA stream \(7\) was given to an engine on cpu; pass stream=None"):
        engine.infer(sample_feeds()["le_dm"], stream=7)
    assert caller_stream(None, torch.device("cpu")) is None


def test_runs_under_inference_mode():
    out = torch_engines(tiny_model(), "cpu")["le_dm"].infer(sample_feeds()["le_dm"])["cond"]
    assert out.is_inference() and not out.requires_grad


def test_repr_names_graph_and_device():
    assert repr(torch_engines(tiny_model(), "cpu")["denoise_step"]) == "TorchEngine(graph='denoise_step', device=cpu)"


def test_the_cpu_runs_the_eager_model_by_default_and_refuses_cuda_settings():
    engines = torch_engines(tiny_model(), "cpu")
    assert all(e.settings == TorchSettings() for e in engines.values())  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"PyTorch settings fastest: .* need\(s\) a CUDA device, got cpu"):
        torch_engines(tiny_model(), "cpu", settings=TorchSettings.preset("fastest"))
    with pytest.raises(TypeError, match=r"settings must be an engines.torch_settings.TorchSettings, got str"):
        torch_engines(tiny_model(), "cpu", settings="eager")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ GPU


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def astronaut(height: int = 256, width: int = 256) -> torch.Tensor:
    """skimage's astronaut, resized: a smooth natural image (1, 3, H, W) float32 in [0, 1]."""
    from skimage import data

    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    return torch.nn.functional.interpolate(image, size=(height, width), mode="area")


@pytest.fixture
def no_tf32():
    """cuDNN convolutions default to TF32: off, so that fp32 means float32."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = saved


def fp16_vs_fp32_psnr() -> float:
    """PSNR of the fp16 chain against the fp32 chain: the GoPro-sized architecture (random
    weights, seeded) on astronaut at 256 x 256."""
    from hidiff.config import HIDiffConfig
    from hidiff.model import HIDiff

    torch.manual_seed(0)
    model = HIDiff(HIDiffConfig()).eval()
    blur = astronaut().cuda()
    noise = torch.randn((1, *model.prior_shape), generator=torch.Generator().manual_seed(1)).cuda()
    outputs = {}
    for precision in ("fp32", "fp16"):
        engines = torch_engines(model, "cuda:0", precision, TorchSettings.preset("channels-last"))
        cond = engines["le_dm"].infer({"blur": blur})["cond"]
        z = noise
        for t in range(model.schedule.num_timesteps - 1, -1, -1):
            z = engines["denoise_step"].infer({"z": z, "cond": cond, "t": torch.tensor([t], device="cuda")})["z_prev"]
        outputs[precision] = engines["restormer"].infer({"blur": blur, "prior": z})["sharp"]
        assert outputs[precision].dtype == torch.float32
        for engine in engines.values():
            engine.close()
    assert torch.isfinite(outputs["fp16"]).all()
    return psnr(outputs["fp16"].clamp(0, 1), outputs["fp32"].clamp(0, 1))


@pytest.mark.gpu
def test_fp16_is_close_to_fp32_on_a_natural_image(no_tf32):
    assert fp16_vs_fp32_psnr() >= 45.0


@pytest.mark.gpu
def test_runs_on_the_given_stream():
    """A torch stream and a raw handle (ExternalStream) give the same result as the current stream."""
    engine = torch_engines(tiny_model(), "cuda:0")["restormer"]
    feeds = {k: v.cuda() for k, v in sample_feeds()["restormer"].items()}
    expected = engine.infer(feeds)["sharp"]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    for stream in (side, side.cuda_stream):
        got = engine.infer(feeds, stream=stream)["sharp"]
        side.synchronize()
        assert torch.equal(got, expected)
    with pytest.raises(TypeError, match=r"stream must be a torch.cuda.Stream, a raw CUDA stream handle"):
        engine.infer(feeds, stream="default")


@pytest.mark.gpu
def test_denoise_step_can_be_captured_in_a_cuda_graph():
    """The runtime replays its 8-step loop as one CUDA graph: infer must not synchronise."""
    engine = torch_engines(tiny_model(), "cuda:0")["denoise_step"]
    feeds = {k: v.cuda() for k, v in sample_feeds()["denoise_step"].items()}
    expected = engine.infer(feeds)["z_prev"]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        engine.infer(feeds)  # warm-up off the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = engine.infer(feeds)["z_prev"]
    graph.replay()
    torch.cuda.synchronize()
    assert (captured - expected).abs().max().item() < 1e-6


@pytest.mark.gpu
def test_fp16_on_cuda_runs_the_fastest_form_by_default():
    engines = torch_engines(tiny_model(), "cuda:0", "fp16")
    assert {e.settings for e in engines.values()} == {TorchSettings.preset("fastest")}  # type: ignore[attr-defined]
    assert all(e.compile_mode == "default" and "cuda_graphs=True" in repr(e) for e in engines.values())


@pytest.mark.gpu
def test_compiled_engine_matches_eager():
    eager = torch_engines(tiny_model(), "cuda:0")["denoise_step"]
    compiled = torch_engines(tiny_model(), "cuda:0", settings=TorchSettings(compile_mode="max-autotune-no-cudagraphs"))
    compiled = compiled["denoise_step"]
    assert compiled.compile_mode == "max-autotune-no-cudagraphs"
    feeds = {k: v.cuda() for k, v in sample_feeds()["denoise_step"].items()}
    got, expected = compiled.infer(feeds)["z_prev"], eager.infer(feeds)["z_prev"]
    assert (got - expected).abs().max().item() < TOLERANCE


def test_padded_channels_give_the_same_output():
    """The eager model keeps the checkpoint's shapes (GDFN hidden 127 channels in the GoPro
    model; the tiny model's int(8 * 2.66) = 21); pad_channels zero-pads them to multiples of 8."""
    engine = torch_engines(tiny_model(), "cpu")["restormer"]
    hidden = {m.project_out.in_channels for m in engine.module.modules() if type(m).__name__ == "GDFN"}
    assert hidden == {21, 42, 85, 170}
    aligned = torch_engines(tiny_model(), "cpu", settings=TorchSettings(pad_channels=True))["restormer"]
    hidden = {m.project_out.in_channels for m in aligned.module.modules() if type(m).__name__ == "GDFN"}
    assert hidden == {24, 48, 88, 176}
    feeds = sample_feeds()["restormer"]
    torch.testing.assert_close(aligned.infer(feeds)["sharp"], engine.infer(feeds)["sharp"], rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_compiled_aligned_restormer_matches_eager():
    """The compiled float16 Restormer with zero-padded channels and inductor's conv_1x1_as_mm
    against the eager float16 engine without padding, same input."""
    eager = torch_engines(tiny_model(), "cuda:0", "fp16", TorchSettings(channels_last=True))["restormer"]
    settings = TorchSettings.preset("compiled").replace(inductor_options=(("conv_1x1_as_mm", True),))
    compiled = torch_engines(tiny_model(), "cuda:0", "fp16", settings)["restormer"]
    assert "conv_1x1_as_mm" in str(compiled.compile_mode)
    feeds = {k: v.cuda() for k, v in sample_feeds()["restormer"].items()}
    got, expected = compiled.infer(feeds)["sharp"], eager.infer(feeds)["sharp"]
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max().item() < 1e-2  # two float16 computations, rounded differently
