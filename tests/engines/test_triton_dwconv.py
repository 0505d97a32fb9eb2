"""The row-streaming depthwise kernels (engines.triton_dwconv): the references against PyTorch's
modules, the module swap and the CPU fallback everywhere; the Triton kernel itself through
Triton's interpreter on the CPU (where Triton is installed) and compiled on a GPU."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from engines import triton_dwconv as dw
from engines.torch_backend import torch_engines
from hidiff.model import HIDiff
from hidiff.restormer import GDFN, MDTA

ROOT = Path(__file__).resolve().parents[2]


def tiny_model() -> HIDiff:
    torch.manual_seed(0)
    return HIDiff(tiny_config()).eval()


def test_references_are_the_modules_computations():
    torch.manual_seed(0)
    ffn = GDFN(8, 2.66, bias=True, prior_channels=4, modulated=False).eval()
    x = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        y = ffn.project_in(x)
        torch.testing.assert_close(ffn.project_out(dw.gated_dwconv3x3_reference(y, ffn.dwconv.weight, ffn.dwconv.bias)),
                                   ffn(x))
        attention = MDTA(8, 2, bias=True, prior_channels=4, modulated=False).eval()
        qkv = attention.qkv(x)
        torch.testing.assert_close(dw.dwconv3x3_reference(qkv, attention.qkv_dwconv.weight, attention.qkv_dwconv.bias),
                                   attention.qkv_dwconv(qkv))


def test_swapped_restormer_computes_the_same_on_cpu():
    """On the CPU the swapped modules run the references: same output, every convolution swapped."""
    model = tiny_model()
    feeds = (torch.rand(1, 3, 24, 40), torch.randn(1, *model.prior_shape))
    with torch.no_grad():
        expected = model.restormer(*feeds)
        blocks = sum(isinstance(m, (GDFN, MDTA)) for m in model.restormer.modules())
        assert dw.use_triton_dwconvs(model.restormer) == blocks > 0
        assert not any(isinstance(m, GDFN) for m in model.restormer.modules())
        assert all(isinstance(m.qkv_dwconv, dw.TritonDepthwiseConv3x3)
                   for m in model.restormer.modules() if isinstance(m, MDTA))
        got = model.restormer(*feeds)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"gated_dwconv3x3 expects x \(B, 2C, H, W\) and weight \(2C, 1, 3, 3\)"):
        dw.gated_dwconv3x3(torch.zeros(1, 5, 4, 4), torch.zeros(5, 1, 3, 3))
    with pytest.raises(ValueError, match=r"dwconv3x3 expects x \(B, C, H, W\) and weight \(C, 1, 3, 3\), got"):
        dw.dwconv3x3(torch.zeros(1, 6, 4, 4), torch.zeros(6, 1, 5, 5))
    with pytest.raises(ValueError, match="needs a 3x3 depthwise convolution with padding 1"):
        dw.TritonDepthwiseConv3x3(torch.nn.Conv2d(4, 4, 3, padding=1, groups=2))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_triton_dwconv_on_the_cpu_is_refused():
    with pytest.raises(ValueError, match="triton_dwconv runs Triton kernels: it needs a CUDA device"):
        torch_engines(tiny_model(), "cpu", triton_dwconv=True)


INTERPRETED = textwrap.dedent("""
    import itertools, torch, triton
    from engines import triton_dwconv as dw

    kernel = dw._dwconv3x3_rows_kernel.fn  # the kernel under the autotuner, run with explicit tiles
    torch.manual_seed(0)
    # Partial tiles in every direction; strips shorter and longer than the image.
    for gated, bias, channels_last, (pairs, channels, rows, prefetch) in itertools.product(
            (False, True), (False, True), (True, False), ((4, 16, 4, True), (8, 8, 16, False))):
        b, c, h, w = 2, 11, 13, 19
        x = torch.randn(b, 2 * c if gated else c, h, w)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        weight = torch.randn(x.shape[1], 1, 3, 3)
        bias_t = torch.randn(x.shape[1]) if bias else None
        out = torch.full((b, c, h, w), float("nan")).to(memory_format=torch.channels_last)
        grid = (triton.cdiv(h, rows) * triton.cdiv(w, 2 * pairs), triton.cdiv(c, channels), b)
        kernel[grid](x, weight, weight if bias_t is None else bias_t, out, h, w, c,
                     x.stride(0), x.stride(2), x.stride(3), x.stride(1),
                     out.stride(0), out.stride(2), out.stride(3), out.stride(1),
                     GATED=gated, HAS_BIAS=bias, ROWS=rows, PAIRS=pairs, BLOCK_C=channels, PREFETCH=prefetch)
        reference = dw.gated_dwconv3x3_reference if gated else dw.dwconv3x3_reference
        torch.testing.assert_close(out, reference(x, weight, bias_t), rtol=1e-5, atol=1e-4)
        print("ok", gated, bias, channels_last, pairs, channels, rows, prefetch)
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_kernel_in_tritons_interpreter_matches_reference():
    """The kernel's indexing, masks and row streaming, run by Triton's CPU interpreter
    (TRITON_INTERPRET=1, read when Triton is imported: hence a fresh interpreter process)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", INTERPRETED], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("ok ") == 16


@pytest.mark.gpu
@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_kernel_matches_reference(gated, dtype, bias, channels_last):
    """Odd sizes (partial tiles in every direction) and a level-1 shape, both memory layouts."""
    torch.manual_seed(0)
    for b, c, h, w in ((2, 21, 13, 37), (1, 128, 40, 72)):
        x = torch.randn(b, 2 * c if gated else c, h, w, device="cuda", dtype=dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        weight = torch.randn(x.shape[1], 1, 3, 3, device="cuda", dtype=dtype) * 0.3
        bias_t = torch.randn(x.shape[1], device="cuda", dtype=dtype) if bias else None
        run, reference = (dw.gated_dwconv3x3, dw.gated_dwconv3x3_reference) if gated else \
            (dw.dwconv3x3, dw.dwconv3x3_reference)
        got = run(x, weight, bias_t)
        expected = reference(x.float(), weight.float(), None if bias_t is None else bias_t.float())
        assert got.shape == (b, c, h, w) and got.dtype == dtype
        # float32 accumulation in both; the float16 result is rounded once.
        tolerance = 2e-2 if dtype == torch.float16 else 1e-4
        torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance)


@pytest.mark.gpu
def test_compiles_without_graph_breaks():
    """torch.compile traces through both triton_ops: one graph, the same numbers as eager."""
    torch.manual_seed(0)
    y = torch.randn(1, 64, 16, 24, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
    weight = torch.randn(64, 1, 3, 3, device="cuda", dtype=torch.float16)

    def both(y: torch.Tensor) -> torch.Tensor:
        return dw.gated_dwconv3x3(dw.dwconv3x3(y, weight), weight) * 2

    explained = torch._dynamo.explain(both)(y)
    assert explained.graph_break_count == 0
    torch.testing.assert_close(torch.compile(both, fullgraph=True)(y), both(y))


@pytest.mark.gpu
def test_fp16_restormer_matches_the_cudnn_one():
    swapped = torch_engines(tiny_model(), "cuda:0", "fp16", triton_dwconv=True)["restormer"]
    plain = torch_engines(tiny_model(), "cuda:0", "fp16")["restormer"]
    assert any(isinstance(m, dw.TritonDepthwiseConv3x3) for m in swapped.module.modules())
    assert any(isinstance(m, dw.FusedGateGDFN) for m in swapped.module.modules())
    assert not any(isinstance(m, (dw.TritonDepthwiseConv3x3, dw.FusedGateGDFN)) for m in plain.module.modules())
    feeds = {"blur": torch.rand(1, 3, 48, 80, device="cuda"), "prior": torch.randn(1, *tiny_model().prior_shape, device="cuda")}
    got, expected = swapped.infer(feeds)["sharp"], plain.infer(feeds)["sharp"]
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max().item() < 1e-2  # two float16 computations, rounded differently
