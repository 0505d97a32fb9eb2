"""The depthwise convolutions as shifted products (engines.shifted_dwconv): equal to the
convolutions on the CPU, swapped into a Restormer and its engines, and fused by inductor with the
GDFN gate into one kernel; the compiled FP16 engine against eager FP32 on a GPU."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from torch._inductor.utils import run_and_get_code

from engines.shifted_dwconv import (
    ShiftedDepthwiseConv3x3,
    ShiftedGateGDFN,
    depthwise3x3_as_shifts,
    gated_depthwise3x3_as_shifts,
    shift_depthwise_convs,
)
from engines.torch_backend import torch_engines
from hidiff.model import HIDiff
from hidiff.restormer import GDFN, MDTA


def tiny_model() -> HIDiff:
    torch.manual_seed(0)
    return HIDiff(tiny_config()).eval()


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_shifted_products_are_the_depthwise_convolution(with_bias: bool, layout: torch.memory_format) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 10, 7, 12).contiguous(memory_format=layout)
    weight, bias = torch.randn(10, 1, 3, 3), torch.randn(10) if with_bias else None
    got = depthwise3x3_as_shifts(x, weight, bias)
    torch.testing.assert_close(got, F.conv2d(x, weight, bias, padding=1, groups=10), rtol=1e-5, atol=1e-5)
    assert got.is_contiguous(memory_format=layout) and got.dtype == x.dtype


def test_only_depthwise_3x3_convolutions_are_taken() -> None:
    with pytest.raises(ValueError, match=r"weight for 4 channels must be \(4, 1, 3, 3\)"):
        depthwise3x3_as_shifts(torch.zeros(1, 4, 5, 5), torch.zeros(4, 1, 5, 5))
    for conv in (torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1, groups=4, stride=2),
                 torch.nn.Conv2d(4, 4, 5, padding=2, groups=4)):
        with pytest.raises(ValueError, match="needs a 3x3 depthwise convolution"):
            ShiftedDepthwiseConv3x3(conv)


def test_every_depthwise_convolution_of_the_restormer_is_swapped_and_the_output_kept() -> None:
    model = tiny_model()
    feeds = (torch.rand(1, 3, 24, 40), torch.randn(1, *model.prior_shape))
    blocks = sum(isinstance(m, (GDFN, MDTA)) for m in model.restormer.modules())
    with torch.no_grad():
        expected = model.restormer(*feeds)
        assert shift_depthwise_convs(model.restormer) == blocks > 0  # one per MDTA, one per GDFN
        got = model.restormer(*feeds)
    block = model.restormer.encoder_level1.blocks[0]
    assert isinstance(block.ffn, ShiftedGateGDFN) and isinstance(block.attn.qkv_dwconv, ShiftedDepthwiseConv3x3)
    assert not any(isinstance(m, GDFN) for m in model.restormer.modules())
    gate_convs = {id(m.dwconv) for m in model.restormer.modules() if isinstance(m, ShiftedGateGDFN)}
    assert all(id(m) in gate_convs for m in model.restormer.modules()
               if isinstance(m, torch.nn.Conv2d) and m.groups > 1)  # held for their weights, never called
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_engines_with_shifted_convolutions_compute_the_same_frame() -> None:
    model = tiny_model()
    shifted = torch_engines(model, "cpu", dwconv_as_shifts=True)["restormer"]
    plain = torch_engines(model, "cpu")["restormer"]
    assert any(isinstance(m, ShiftedDepthwiseConv3x3) for m in shifted.module.modules())
    assert not any(isinstance(m, ShiftedDepthwiseConv3x3) for m in model.modules())  # the caller's model is untouched
    feeds = {"blur": torch.rand(1, 3, 32, 48), "prior": torch.randn(1, *model.prior_shape)}
    torch.testing.assert_close(shifted.infer(feeds)["sharp"], plain.infer(feeds)["sharp"], rtol=1e-5, atol=1e-5)


def test_inductor_fuses_the_convolution_and_the_gate_into_one_kernel() -> None:
    """What the module is for: compiled, GDFN's padding, both halves' nine products and the GELU
    gate are one kernel that writes only the gated channels (CPU inductor here; its scheduler makes
    the same fusion for Triton on a GPU)."""
    torch.manual_seed(0)
    ffn = torch.nn.Sequential(GDFN(8, 2.66, bias=True, prior_channels=4, modulated=False)).eval()
    hidden = ffn[0].project_out.in_channels  # 21; the convolution has 42 channels
    x = torch.randn(1, 8, 16, 16).to(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = ffn(x)
        assert shift_depthwise_convs(ffn) == 1 and isinstance(ffn[0], ShiftedGateGDFN)
        torch._dynamo.reset()
        got, codes = run_and_get_code(torch.compile(ffn), x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    source = "\n".join(codes)
    kernels = {line.split("cpp_fused_", 1)[1].split(" ")[0] for line in source.splitlines() if "= async_compile" in line}
    assert any("constant_pad_nd" in k and "gelu" in k and "mul" in k for k in kernels), sorted(kernels)
    buffers = [line for line in source.splitlines() if "= empty_strided_cpu(" in line]
    assert buffers and not any(f"(1, {2 * hidden}, 16, 16)" in line for line in buffers), buffers
    assert any(f"(1, {hidden}, 16, 16)" in line for line in buffers), buffers


def test_the_gate_is_gdfns() -> None:
    torch.manual_seed(2)
    y, weight, bias = torch.randn(2, 12, 5, 9), torch.randn(12, 1, 3, 3), torch.randn(12)
    z1, z2 = F.conv2d(y, weight, bias, padding=1, groups=12).chunk(2, dim=1)
    torch.testing.assert_close(gated_depthwise3x3_as_shifts(y, weight, bias), F.gelu(z1) * z2, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="even channel count"):
        gated_depthwise3x3_as_shifts(torch.zeros(1, 5, 4, 4), torch.zeros(5, 1, 3, 3))


@pytest.mark.gpu
def test_compiled_fp16_restormer_with_shifted_convolutions_matches_fp32() -> None:
    model = tiny_model()
    shifted = torch_engines(model, "cuda:0", "fp16", compile=True, dwconv_as_shifts=True)["restormer"]
    reference = torch_engines(model, "cuda:0", "fp32", channels_last=False)["restormer"]
    feeds = {"blur": torch.rand(1, 3, 48, 80, device="cuda"), "prior": torch.randn(1, *model.prior_shape, device="cuda")}
    got, expected = shifted.infer(feeds)["sharp"], reference.infer(feeds)["sharp"]
    mse = torch.mean((got.clamp(0, 1) - expected.clamp(0, 1)) ** 2).item()
    assert torch.isfinite(got).all() and 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-20))).item() > 45
