"""engines.kernels.prior_attention: HIM's per-image matrices and their padding, the kernel against
the PyTorch reference through Triton's interpreter on the CPU, and its sm_90 register use. (The
folded module, FusedHIM, is tested with the other fused modules in test_fuse.py.)"""
from __future__ import annotations

import importlib.util
import textwrap

import pytest
import torch
from triton_cpu import CAPABILITIES, cuda_resources, fits, run_in_interpreter

from engines.kernels import prior_attention as fused


def test_padded_columns():
    assert fused.padded_columns(1, 16) == (1, 16)
    assert fused.padded_columns(2, 4) == (4, 4)  # at least 16 columns
    assert fused.padded_columns(4, 3) == (4, 4)
    assert fused.padded_columns(8, 4) == (8, 4)
    assert fused.padded_columns(3, 9) == (4, 16)


def test_bad_shapes_are_refused():
    x = torch.randn(1, 8, 4, 4)
    a, a0, b = torch.randn(1, 8, 16), torch.randn(1, 16), torch.randn(1, 16, 8)
    with pytest.raises(ValueError, match="prior_attention expects"):
        fused.prior_attention(x, a[:, :4], a0, b, None, 16, 1e-5)
    with pytest.raises(ValueError, match="prior_attention expects"):
        fused.prior_attention(x, a, a0, b, None, 32, 1e-5)  # 32 tokens cannot fill 16 columns


INTERPRETED = textwrap.dedent("""
    import itertools, torch
    from engines.kernels import prior_attention as fused

    torch.manual_seed(0)
    kernel = fused.prior_attention_kernel.fn  # the kernel under the autotuner, with explicit tiles
    # partial row tiles; 16 tokens x 1 head, 4 x 2 (padding heads), 3 x 4 (padding tokens); C below a power of two
    for (b, c, heads, tokens, h, w), bias_free, with_bias, block_m in itertools.product(
            ((2, 48, 1, 16, 5, 7), (1, 96, 2, 4, 3, 11), (1, 20, 4, 3, 4, 4)), (False, True), (False, True), (16, 32)):
        x = torch.randn(b, c, h, w).half().to(memory_format=torch.channels_last)
        k, v = torch.randn(b, tokens, c), torch.randn(b, tokens, c)
        wq, q0, wp = torch.randn(c, c) * c ** -0.5, torch.randn(c) * 0.1, torch.randn(c, c) * c ** -0.5
        a, a0, bm = fused.fold_prior_attention(k, v, heads, (c // heads) ** -0.5, wq, q0, wp)
        bias = torch.randn(c).half() if with_bias else None
        got = fused.launch_prior_attention(kernel, x, a, a0, bm, bias, tokens, 1e-5, bias_free, BLOCK_M=block_m)
        want = fused.prior_attention_reference(x.float(), a.half().float(), a0, bm.half().float(),
                                               None if bias is None else bias.float(), tokens, 1e-5, bias_free)
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)
        print("ok", c, heads, tokens, bias_free, with_bias, block_m)
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_kernel_in_tritons_interpreter_matches_the_reference():
    assert run_in_interpreter(INTERPRETED).count("ok") == 24


def _resources(block_c: int, block_m: int, warps: int, groups: int = 4, tokens: int = 4,
               capability: int = 90) -> dict[str, int]:
    return cuda_resources(fused.prior_attention_kernel.fn, ("x_ptr", "a_ptr", "bm_ptr", "bias_ptr", "y_ptr"),
                          {"BIAS_FREE": False, "HAS_BIAS": True, "BLOCK_C": block_c, "GROUPS": groups, "TOKENS": tokens,
                           "BLOCK_M": block_m}, warps, unaligned=("HW",), scalars={"eps": "fp32", "a0_ptr": "*fp32"},
                          stages=1, capability=capability)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
@pytest.mark.parametrize("capability", CAPABILITIES)
def test_kept_tiles_do_not_spill(capability):
    """Every tile the pruned autotuner may run fits the registers and shared memory of an H100, an
    A100 and a Jetson Orin at the GoPro model's HIM widths (48, 96 and 192 channels: BLOCK_C 64,
    128, 256), and the rule leaves out tiles that spill."""
    for block_c in (64, 128, 256):
        for block_m, warps, _ in fused.TILES:
            if fused.fits_registers(block_m, block_c, warps, capability):
                usage = _resources(block_c, block_m, warps, capability=capability)
                assert fits(usage, capability), (block_c, block_m, warps, usage)
        assert any(fused.fits_registers(bm, block_c, w, capability) for bm, w, _ in fused.TILES)
    # The check can fail: the rule leaves out tiles that spill (on sm_80, one that fits on sm_90).
    if capability == 90:
        assert not fused.fits_registers(64, 256, 4, 90) and _resources(256, 64, 4)["STACK"] > 0
    if capability == 80:
        assert not fused.fits_registers(64, 128, 4, 80) and fused.fits_registers(64, 128, 4, 90)
        assert _resources(128, 64, 4, capability=80)["STACK"] > 0
