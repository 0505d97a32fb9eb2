"""The fused GDFN gate (engines.triton_gated_dwconv): the Triton kernel against its PyTorch
reference on a GPU; the module swap and the CPU fallback everywhere."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from engines import triton_gated_dwconv as gated
from engines.torch_backend import torch_engines
from hidiff.model import HIDiff
from hidiff.restormer import GDFN


def tiny_model() -> HIDiff:
    torch.manual_seed(0)
    return HIDiff(tiny_config()).eval()


def test_reference_is_gdfn_gate():
    """The reference is GDFN's own computation: dwconv, chunk, gelu(x1) * x2."""
    torch.manual_seed(0)
    ffn = GDFN(8, 2.66, bias=True, prior_channels=4, modulated=False).eval()
    x = torch.randn(2, 8, 9, 11)
    y = ffn.project_in(x)
    expected = ffn.project_out(torch.nn.functional.gelu(ffn.dwconv(y).chunk(2, 1)[0]) * ffn.dwconv(y).chunk(2, 1)[1])
    got = ffn.project_out(gated.gated_dwconv3x3_reference(y, ffn.dwconv.weight, ffn.dwconv.bias))
    torch.testing.assert_close(got, expected)


def test_fused_modules_compute_the_same_restormer_on_cpu():
    """On the CPU the fused modules fall back to the reference: same output, every GDFN swapped."""
    model = tiny_model()
    feeds = (torch.rand(1, 3, 24, 40), torch.randn(1, *model.prior_shape))
    with torch.no_grad():
        expected = model.restormer(*feeds)
        gdfns = sum(isinstance(m, GDFN) for m in model.restormer.modules())
        assert gated.fuse_gdfn_gates(model.restormer) == gdfns > 0
        assert not any(isinstance(m, GDFN) for m in model.restormer.modules())
        got = model.restormer(*feeds)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"expects y \(B, 2C, H, W\) and weight \(2C, 1, 3, 3\)"):
        gated.gated_dwconv3x3(torch.zeros(1, 5, 4, 4), torch.zeros(5, 1, 3, 3))
    with pytest.raises(ValueError, match="expects y"):
        gated.gated_dwconv3x3(torch.zeros(1, 6, 4, 4), torch.zeros(6, 1, 5, 5))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_fuse_gates_on_the_cpu_is_refused():
    with pytest.raises(ValueError, match="fuse_gates runs a Triton kernel: it needs a CUDA device"):
        torch_engines(tiny_model(), "cpu", fuse_gates=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_kernel_matches_reference(dtype, bias, channels_last):
    """Odd sizes (partial tiles in every direction), both memory layouts, with and without bias."""
    torch.manual_seed(0)
    for b, c, h, w in ((2, 21, 13, 37), (1, 128, 40, 72)):
        y = torch.randn(b, 2 * c, h, w, device="cuda", dtype=dtype)
        if channels_last:
            y = y.to(memory_format=torch.channels_last)
        weight = torch.randn(2 * c, 1, 3, 3, device="cuda", dtype=dtype) * 0.3
        bias_t = torch.randn(2 * c, device="cuda", dtype=dtype) if bias else None
        got = gated.gated_dwconv3x3(y, weight, bias_t)
        expected = gated.gated_dwconv3x3_reference(y.float(), weight.float(), None if bias_t is None else bias_t.float())
        assert got.shape == (b, c, h, w) and got.dtype == dtype
        # float32 accumulation in both; the float16 result is rounded once.
        tolerance = 2e-2 if dtype == torch.float16 else 1e-4
        torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance)


@pytest.mark.gpu
def test_compiles_without_graph_breaks():
    """torch.compile traces through the triton_op: one graph, the same numbers as eager."""
    torch.manual_seed(0)
    y = torch.randn(1, 64, 16, 24, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
    weight = torch.randn(64, 1, 3, 3, device="cuda", dtype=torch.float16)

    def gate(y: torch.Tensor) -> torch.Tensor:
        return gated.gated_dwconv3x3(y, weight, None) * 2

    explained = torch._dynamo.explain(gate)(y)
    assert explained.graph_break_count == 0
    torch.testing.assert_close(torch.compile(gate, fullgraph=True)(y), gate(y))


@pytest.mark.gpu
def test_fused_fp16_restormer_matches_the_unfused_one():
    fused = torch_engines(tiny_model(), "cuda:0", "fp16", fuse_gates=True)["restormer"]
    plain = torch_engines(tiny_model(), "cuda:0", "fp16")["restormer"]
    assert any(isinstance(m, gated.FusedGateGDFN) for m in fused.module.modules())
    assert not any(isinstance(m, gated.FusedGateGDFN) for m in plain.module.modules())
    feeds = {"blur": torch.rand(1, 3, 48, 80, device="cuda"), "prior": torch.randn(1, *tiny_model().prior_shape, device="cuda")}
    got, expected = fused.infer(feeds)["sharp"], plain.infer(feeds)["sharp"]
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max().item() < 1e-2  # two float16 computations, rounded differently
