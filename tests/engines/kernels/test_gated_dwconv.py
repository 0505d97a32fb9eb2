"""The fused GDFN gate (engines.kernels.gated_dwconv): the Triton kernel against its PyTorch
reference, through Triton's interpreter on the CPU (where Triton is installed) and compiled on a
GPU; the CPU fallback everywhere."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from triton_cpu import CAPABILITIES, cuda_resources, fits, run_in_interpreter

from engines.kernels import gated_dwconv as gated
from engines.kernels.support import DISK_CACHE
from hidiff.restormer import GDFN

ROOT = Path(__file__).resolve().parents[3]


def test_reference_is_gdfn_gate():
    """The reference is GDFN's own computation: dwconv, chunk, gelu(x1) * x2."""
    torch.manual_seed(0)
    ffn = GDFN(8, 2.66, bias=True, prior_channels=4, modulated=False).eval()
    x = torch.randn(2, 8, 9, 11)
    y = ffn.project_in(x)
    expected = ffn.project_out(torch.nn.functional.gelu(ffn.dwconv(y).chunk(2, 1)[0]) * ffn.dwconv(y).chunk(2, 1)[1])
    got = ffn.project_out(gated.gated_dwconv3x3_reference(y, ffn.dwconv.weight, ffn.dwconv.bias))
    torch.testing.assert_close(got, expected)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"expects y \(B, 2C, H, W\) and weight \(2C, 1, 3, 3\)"):
        gated.gated_dwconv3x3(torch.zeros(1, 5, 4, 4), torch.zeros(5, 1, 3, 3))
    with pytest.raises(ValueError, match="expects y"):
        gated.gated_dwconv3x3(torch.zeros(1, 6, 4, 4), torch.zeros(6, 1, 5, 5))


INTERPRETED = textwrap.dedent("""
    import itertools, torch
    from engines.kernels import gated_dwconv as gated

    kernel = gated.gated_dwconv3x3_kernel.fn  # the kernel under the autotuner, run with explicit tiles
    torch.manual_seed(0)
    # Partial tiles in every direction (odd width: a pair whose odd column is outside; 11 channels:
    # a partial channel block), strips shorter and longer than the image, strips whose rows are not
    # a multiple of the loop's three; and programs away from every edge, which load without masks.
    # Each tile with and without bias, each of those in one of the two layouts.
    for (bias, channels_last), (c, pairs, channels, rows) in itertools.product(
            ((False, True), (True, False)), ((11, 4, 16, 4), (11, 8, 8, 16), (16, 2, 8, 5), (16, 2, 16, 7))):
        b, h, w = 2, 13, 19
        y = torch.randn(b, 2 * c, h, w)
        if channels_last:
            y = y.to(memory_format=torch.channels_last)
        weight = torch.randn(2 * c, 1, 3, 3)
        bias_t = torch.randn(2 * c) if bias else None
        out = gated.launch_gated_dwconv3x3(kernel, y, weight, bias_t, ROWS=rows, PAIRS=pairs, BLOCK_C=channels)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, gated.gated_dwconv3x3_reference(y, weight, bias_t), rtol=1e-5, atol=1e-4)
        print("ok", bias, channels_last, c, pairs, channels, rows)
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_kernel_in_tritons_interpreter_matches_reference():
    """The kernel's indexing, masks and row streaming, run by Triton's CPU interpreter
    (TRITON_INTERPRET=1, read when Triton is imported: hence a fresh interpreter process)."""
    assert run_in_interpreter(INTERPRETED).count("ok ") == 8


def _resources(pairs: int, channels: int, rows: int, warps: int, capability: int = 90) -> dict[str, int]:
    """The float16 kernel's resources on sm_``capability``, specialised as a launch on channels-last
    tensors specialises it (unit channel strides, multiples of 16)."""
    return cuda_resources(gated.gated_dwconv3x3_kernel.fn, ("y_ptr", "w_ptr", "b_ptr", "out_ptr"),
                          {"C": 256, "HAS_BIAS": False, "ROWS": rows, "PAIRS": pairs, "BLOCK_C": channels}, warps,
                          unaligned=("H", "W"), capability=capability)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
@pytest.mark.parametrize("capability", CAPABILITIES)
def test_no_tile_spills_registers(capability):
    """Every tile the autotuner may pick fits the registers and shared memory of an H100, an A100
    and a Jetson Orin: no stack, no local memory."""
    for pairs, channels, warps in gated.TILES:
        usage = _resources(pairs, channels, max(gated.STRIP_ROWS), warps, capability)
        assert usage["REG"] <= 255, usage
        assert fits(usage, capability), ((pairs, channels, warps), usage)
    # The check can fail: a tile of 8 channels of a pair per thread spills.
    assert _resources(4, 64, 16, 1, capability)["STACK"] > 0


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
        # float32 products and sums in both; the float16 result rounded in the kernel.
        tolerance = 2e-2 if dtype == torch.float16 else 1e-4
        torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance)


@pytest.mark.gpu
def test_compiles_without_graph_breaks_or_output_fills():
    """torch.compile calls the op in one graph, with the same numbers as eager, and writes its
    output once: no kernel fills it first (inductor filled a traced triton_op's output with NaN)."""
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    y = torch.randn(1, 64, 16, 24, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
    weight = torch.randn(64, 1, 3, 3, device="cuda", dtype=torch.float16)

    def gate(y: torch.Tensor) -> torch.Tensor:
        return gated.gated_dwconv3x3(y, weight, None) * 2

    explained = torch._dynamo.explain(gate)(y)
    assert explained.graph_break_count == 0
    torch._dynamo.reset()
    compiled, codes = run_and_get_code(torch.compile(gate, fullgraph=True), y)
    code = "\n".join(codes)
    assert "hidiff.gated_dwconv3x3" in code and 'float("nan")' not in code
    torch.testing.assert_close(compiled, gate(y))


def test_compile_sees_the_output_shape_and_layout():
    """The op's registered shape function, what torch.compile plans buffers by: (B, C, H, W)
    channels-last, as the kernel writes it. Fake CUDA tensors: no GPU needed."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        y = torch.empty(2, 64, 8, 12, device="cuda", dtype=torch.float16)
        out = torch.ops.hidiff.gated_dwconv3x3(y, torch.empty(64, 1, 3, 3, device="cuda", dtype=torch.float16), None)
        assert out.shape == (2, 32, 8, 12) and out.dtype == torch.float16
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.gpu
@pytest.mark.skipif(not DISK_CACHE, reason="this Triton's autotuner has no cache_results")
def test_autotuned_tiles_are_kept_on_disk(tmp_path):
    """A fresh process autotunes a new shape and leaves the choice in Triton's cache folder, for
    the next process on the machine to read instead of timing every tile again."""
    script = ("import torch\nfrom engines.kernels import gated_dwconv as gated\n"
              "y = torch.randn(1, 64, 24, 40, device='cuda', dtype=torch.float16).to(memory_format=torch.channels_last)\n"
              "gated.gated_dwconv3x3(y, torch.randn(64, 1, 3, 3, device='cuda', dtype=torch.float16))\n"
              "torch.cuda.synchronize()\n")
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(tmp_path.rglob("*.autotune.json"))
