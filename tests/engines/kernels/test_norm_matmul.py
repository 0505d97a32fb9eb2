"""The LayerNorm and residual inside the 1x1 projections (engines.kernels.norm_matmul): the
Triton kernels against their PyTorch references through Triton's interpreter on the CPU and
compiled on a GPU, and their registers on sm_90 compiled on the CPU."""
from __future__ import annotations

import importlib.util
import re
import textwrap

import pytest
import torch
from triton_cpu import CAPABILITIES, cuda_resources, fits, run_in_interpreter

from engines.kernels import norm_matmul as fused


def test_bad_shapes_are_refused():
    x = torch.zeros(1, 8, 4, 4)
    with pytest.raises(ValueError, match=r"norm_conv1x1 expects x \(B, K, H, W\), weight_t \(K, N\) and bias \(N,\), "
                                         r"got \(1, 8, 4, 4\), \(6, 4\) and \(4,\)"):
        fused.norm_conv1x1(x, torch.zeros(6, 4), torch.zeros(4), 1e-5)
    with pytest.raises(ValueError, match=r"conv1x1_residual expects a \(B, K, H, W\), weight \(N, K\) or \(B, N, K\)"):
        fused.conv1x1_residual(x, torch.zeros(4, 6), None, torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"conv1x1_residual expects"):
        fused.conv1x1_residual(x, torch.zeros(1, 4, 8), None, torch.zeros(1, 4, 4, 5))


INTERPRETED = textwrap.dedent("""
    import itertools, torch
    from engines.kernels import norm_matmul as fused

    torch.manual_seed(0)
    norm_kernel = fused.norm_matmul_kernel.fn  # the kernels under the autotuners, with explicit tiles
    residual_kernel = fused.matmul_residual_kernel.fn
    # Partial row tiles; K below, at and above a power of two; N over several slices.
    for bias_free, (b, k, h, w, n), (block_m, block_n) in itertools.product(
            (False, True), ((2, 48, 5, 7, 144), (1, 20, 3, 11, 40)), ((16, 32), (32, 64))):
        x = torch.randn(b, k, h, w).half().to(memory_format=torch.channels_last)
        weight_t, bias = (torch.randn(k, n) * 0.2).half(), torch.randn(n).half()
        got = fused.launch_norm_matmul(norm_kernel, x, weight_t, bias, 1e-5, bias_free, BLOCK_M=block_m, BLOCK_N=block_n)
        want = fused.norm_conv1x1_reference(x.float(), weight_t.float(), bias.float(), 1e-5, bias_free)
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)
        print("ok norm", bias_free, k, n, block_m, block_n)
    # Shared weights over a channels-last map; per-image weights over a channel slice (MDTA's v).
    for with_bias, per_image, (block_m, block_k) in itertools.product(
            (False, True), (False, True), ((16, 16), (32, 32))):
        b, k, h, w, n = 2, 40, 5, 7, 24
        if per_image:
            a = torch.randn(b, 3 * k, h * w).half().transpose(1, 2).contiguous().transpose(1, 2)[:, 2 * k:]
            weight = (torch.randn(b, n, k) * 0.2).half()
        else:
            a = torch.randn(b, k, h, w).half().to(memory_format=torch.channels_last)
            weight = (torch.randn(n, k) * 0.2).half()
        bias = torch.randn(n).half() if with_bias else None
        residual = torch.randn(b, n, h, w).half().to(memory_format=torch.channels_last)
        got = fused.launch_matmul_residual(residual_kernel, a, weight, bias, residual, BLOCK_M=block_m, BLOCK_K=block_k)
        want = fused.conv1x1_residual_reference(a.float(), weight.float(), None if bias is None else bias.float(),
                                                residual.float())
        torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)
        print("ok residual", with_bias, per_image, block_m, block_k)
    # The TMA kernel: W^T and the output as tensor descriptors (zeros read past K and N, nothing
    # written past M and N): a partial row tile, N below one slice, over several and not a multiple.
    for bias_free, (b, k, h, w, n) in itertools.product((False, True), ((2, 48, 5, 7, 144), (1, 20, 3, 11, 40),
                                                                        (1, 96, 9, 9, 520))):
        x = torch.randn(b, k, h, w).half().to(memory_format=torch.channels_last)
        weight_t, bias = (torch.randn(k, n) * 0.2).half(), torch.randn(n).half()
        want = fused.norm_conv1x1_reference(x.float(), weight_t.float(), bias.float(), 1e-5, bias_free)
        for block_m in (64, 128):  # the autotuner's two tile heights
            got = fused.launch_norm_matmul_tma(fused.norm_matmul_tma_kernel.fn, x, weight_t, bias, 1e-5, bias_free,
                                               BLOCK_M=block_m)
            assert got.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)
        print("ok tma", bias_free, k, n)
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_kernels_in_tritons_interpreter_match_the_references():
    """Indexing, masks and slices of both kernels, run by Triton's CPU interpreter
    (TRITON_INTERPRET=1, read when Triton is imported: hence a fresh interpreter process)."""
    printed = run_in_interpreter(INTERPRETED)
    assert printed.count("ok norm") == 8 and printed.count("ok residual") == 8 and printed.count("ok tma") == 6


def _norm_resources(block_k: int, block_m: int, block_n: int, warps: int, stages: int = 2,
                    capability: int = 90) -> dict[str, int]:
    return cuda_resources(fused.norm_matmul_kernel.fn, ("x_ptr", "w_ptr", "b_ptr", "y_ptr"),
                          {"BIAS_FREE": False, "BLOCK_K": block_k, "BLOCK_M": block_m, "BLOCK_N": block_n}, warps,
                          unaligned=("M",), scalars={"eps": "fp32"}, stages=stages, capability=capability)


def _residual_resources(block_n: int, block_m: int, block_k: int, warps: int, stages: int = 3,
                        capability: int = 90) -> dict[str, int]:
    return cuda_resources(fused.matmul_residual_kernel.fn, ("a_ptr", "w_ptr", "b_ptr", "r_ptr", "y_ptr"),
                          {"HAS_BIAS": False, "BLOCK_N": block_n, "BLOCK_M": block_m, "BLOCK_K": block_k,
                           "stride_wk": 1}, warps, unaligned=("M",), stages=stages, capability=capability)


def _tma_resources(block_k: int, block_m: int, warps: int, stages: int) -> dict[str, int]:
    """The TMA kernel compiled for sm_90 (descriptor arguments typed as its launches type them):
    its resources, and how many tensor-memory-accelerator copies its machine code holds."""
    from bench.kernel_sass import compile_cuda, cuobjdump, resources

    types = {"x_ptr": "*fp16", "b_ptr": "*fp16", "eps": "fp32", "M": "i32", "N": "i32", "K": "i32", "stride_xm": "i32",
             "w_desc": f"tensordesc<fp16[{block_k}, {fused.TMA_BLOCK_N}]>",
             "y_desc": f"tensordesc<fp16[{block_m}, {fused.TMA_BLOCK_N}]>"}
    compiled = compile_cuda(fused.norm_matmul_tma_kernel.fn, types,
                            {"BIAS_FREE": False, "BLOCK_K": block_k, "BLOCK_M": block_m,
                             "BLOCK_N": fused.TMA_BLOCK_N}, warps, stages, aligned=("x_ptr", "b_ptr", "N", "K", "stride_xm"))
    found = resources(compiled)
    found["tma_instructions"] = len(re.findall(r"UTMALDG|UTMASTG", cuobjdump(compiled, "-sass")))
    return found


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_tma_kernel_compiles_for_an_h100_with_tma_and_no_spills():
    """Every launch the TMA kernel's autotuner may pick, at K up to 192 (BLOCK_K 256), compiles for
    sm_90 to tensor-memory-accelerator copies (UTMALDG/UTMASTG in the machine code) without spills."""
    for block_k in (64, 128, 256):
        for block_m, warps, stages in fused.TMA_LAUNCHES:
            usage = _tma_resources(block_k, block_m, warps, stages)
            assert usage["STACK"] == 0 and usage["LOCAL"] == 0, (block_k, block_m, warps, stages, usage)
            assert usage["tma_instructions"] >= 2, usage


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
@pytest.mark.parametrize("capability", CAPABILITIES)
def test_no_tile_spills_registers(capability):
    """Every tile the autotuners may pick fits the registers and shared memory of an H100, an A100
    and a Jetson Orin at the widest rows the GoPro Restormer gives the kernels (192 channels:
    BLOCK_K 256; N 192: BLOCK_N 256). The pointer kernels are what cards before Hopper run."""
    for tile in fused.NORM_TILES:
        if fused.norm_tile_fits(tile[0], 256, capability):
            usage = _norm_resources(256, *tile, capability=capability)
            assert fits(usage, capability), (tile, usage)
    for tile in fused.RESIDUAL_TILES:
        if fused.residual_tile_fits(256, tile[3], capability):
            usage = _residual_resources(256, *tile, capability=capability)
            assert fits(usage, capability), (tile, usage)
    if capability < 90:  # the check can fail: what the rules leave out before Hopper does not fit there
        assert not fits(_norm_resources(256, 256, 64, 8, 2, capability=capability), capability)
        assert not fits(_residual_resources(256, 64, 64, 4, 2, capability=capability), capability)
    else:  # the check can fail: the tiles left out of the lists spill on sm_90
        assert _norm_resources(256, 128, 64, 4)["STACK"] > 0
        assert _residual_resources(256, 128, 32, 4)["STACK"] > 0


@pytest.mark.gpu
@pytest.mark.parametrize("bias_free", [False, True])
def test_norm_kernel_matches_the_reference(bias_free):
    torch.manual_seed(0)
    for b, k, h, w, n in ((2, 48, 13, 37, 144), (1, 96, 40, 72, 512), (1, 192, 9, 16, 1024)):
        x = torch.randn(b, k, h, w, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
        weight_t = (torch.randn(k, n, device="cuda") * k ** -0.5).half()
        bias = torch.randn(n, device="cuda").half()
        got = fused.norm_conv1x1(x, weight_t, bias, 1e-5, bias_free)
        want = fused.norm_conv1x1_reference(x, weight_t, bias, 1e-5, bias_free)
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
def test_plain_and_tma_norm_kernels_agree():
    """Both forms of the norm kernel on this GPU (the TMA one where it is a Hopper or later) against
    the reference, with a partial row tile and N not a multiple of the slice."""
    torch.manual_seed(0)
    for b, k, h, w, n in ((2, 48, 13, 37, 144), (1, 192, 9, 16, 1032)):
        x = torch.randn(b, k, h, w, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
        weight_t = (torch.randn(k, n, device="cuda") * k ** -0.5).half()
        bias = torch.randn(n, device="cuda").half()
        want = fused.norm_conv1x1_reference(x, weight_t, bias, 1e-5, False).float()
        plain = fused.launch_norm_matmul(fused.norm_matmul_kernel, x, weight_t, bias, 1e-5, False)
        torch.testing.assert_close(plain.float(), want, rtol=1e-2, atol=1e-2)
        if fused.tma_fits(x, weight_t):
            tma = fused.launch_norm_matmul_tma(fused.norm_matmul_tma_kernel, x, weight_t, bias, 1e-5, False)
            torch.testing.assert_close(tma.float(), want, rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("per_image", [False, True])
def test_residual_kernel_matches_the_reference(per_image):
    torch.manual_seed(0)
    for b, k, h, w, n in ((2, 48, 13, 37, 48), (1, 256, 40, 72, 96), (1, 512, 9, 16, 192)):
        if per_image:  # MDTA: v is a channel slice of qkv, M one matrix per image
            qkv = torch.randn(b, 3 * k, h, w, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
            a, weight = qkv.flatten(2)[:, 2 * k:], (torch.randn(b, n, k, device="cuda") * k ** -0.5).half()
        else:
            a = torch.randn(b, k, h, w, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
            weight = (torch.randn(n, k, device="cuda") * k ** -0.5).half()
        residual = torch.randn(b, n, h, w, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
        bias = torch.randn(n, device="cuda").half()
        got = fused.conv1x1_residual(a, weight, bias, residual)
        want = fused.conv1x1_residual_reference(a, weight, bias, residual)
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
def test_both_compile_without_graph_breaks_or_output_fills():
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    x = torch.randn(1, 48, 16, 24, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
    weight_t, bias = (torch.randn(48, 96, device="cuda") * 0.1).half(), torch.randn(96, device="cuda").half()
    weight_out = (torch.randn(48, 96, device="cuda") * 0.1).half()

    def block(x: torch.Tensor) -> torch.Tensor:
        hidden = fused.norm_conv1x1(x, weight_t, bias, 1e-5)
        return fused.conv1x1_residual(torch.relu(hidden), weight_out, None, x)

    assert torch._dynamo.explain(block)(x).graph_break_count == 0
    torch._dynamo.reset()
    compiled, codes = run_and_get_code(torch.compile(block, fullgraph=True), x)
    code = "\n".join(codes)
    assert "hidiff.norm_conv1x1" in code and "hidiff.conv1x1_residual" in code and 'float("nan")' not in code
    # float16 outputs; the autotuners may pick other tiles (another summation order) for each
    torch.testing.assert_close(compiled, block(x), rtol=1e-2, atol=2e-3)


def test_compile_sees_the_output_shapes_and_layouts():
    """The ops' registered shape functions: channels-last outputs, as the kernels write them."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        half = {"device": "cuda", "dtype": torch.float16}
        x = torch.empty(2, 48, 8, 12, **half)
        normed = torch.ops.hidiff.norm_conv1x1(x, torch.empty(48, 144, **half), torch.empty(144, **half), 1e-5, False)
        assert normed.shape == (2, 144, 8, 12) and normed.is_contiguous(memory_format=torch.channels_last)
        out = torch.ops.hidiff.conv1x1_residual(torch.empty(2, 96, 8, 12, **half), torch.empty(48, 96, **half), None, x)
        assert out.shape == (2, 48, 8, 12) and out.is_contiguous(memory_format=torch.channels_last)
