"""MDTA's per-head cosines from one pass over q and k (engines.kernels.head_gram): the split and the
epilogue on the CPU, the kernel against hidiff.restormer's computation through Triton's interpreter
on the CPU, compiled for sm_90 on the CPU (registers, spills, shared memory), and on a GPU."""
from __future__ import annotations

import importlib.util
import inspect
import textwrap

import pytest
import torch
from triton_cpu import CAPABILITIES, fits, run_in_interpreter

from engines.kernels import head_gram as gram
from engines.kernels.support import dot_block, sm_count
from hidiff.restormer import MDTA, channel_cosine, head_blocks

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")


def _qk(b: int, c: int, n: int, layout: str = "slice", dtype: torch.dtype = torch.float32,
        device: str = "cpu") -> torch.Tensor:
    """(B, 2C, N) q and k with cosines of order one (a shared rank-8 signal plus noise): a channel
    slice of a channels-last (B, 3C, N) qkv as MDTA has it (``slice``: strides (3C N, 1, 3C)), or a
    contiguous tensor. (Casting a slice would copy it to dense strides: the cast comes first.)"""
    x = torch.randn(b, n, 8, device=device) @ torch.randn(8, 3 * c, device=device)
    qkv = (x + 0.5 * torch.randn(b, n, 3 * c, device=device)).to(dtype).transpose(1, 2)  # (B, 3C, N)
    return qkv[:, : 2 * c] if layout == "slice" else qkv[:, : 2 * c].contiguous()


def _partials_in_torch(qk: torch.Tensor, heads: int, rows: int) -> torch.Tensor:
    """The kernel's partials (B, heads, SPLIT, d + 2, d) computed in float32 PyTorch, N cut in ranges
    of ``rows``: q_h k_h^T, then the |q_i|^2 and |k_j|^2 rows."""
    b, two_c, n = qk.shape
    c = two_c // 2
    d = c // heads
    q = qk[:, :c].float().reshape(b, heads, d, n)
    k = qk[:, c:].float().reshape(b, heads, d, n)
    parts = []
    for start in range(0, n, rows):
        qs, ks = q[..., start:start + rows], k[..., start:start + rows]
        squares = torch.stack([(qs * qs).sum(-1), (ks * ks).sum(-1)], dim=2)  # (B, heads, 2, d)
        parts.append(torch.cat([qs @ ks.transpose(-1, -2), squares], dim=2))
    return torch.stack(parts, dim=2)


def test_epilogue_sums_the_partials_and_normalises_as_channel_cosine():
    torch.manual_seed(0)
    for b, c, heads, n, rows in ((2, 48, 1, 700, 256), (1, 96, 2, 1000, 128), (2, 64, 4, 333, 100)):
        qk = _qk(b, c, n)
        partials = _partials_in_torch(qk, heads, rows)
        assert partials.shape == (b, heads, -(-n // rows), c // heads + 2, c // heads)
        got = gram.head_gram_partials_to_cosine(partials)
        torch.testing.assert_close(got, head_blocks(channel_cosine(qk.float()), heads), rtol=1e-5, atol=1e-5)


def test_epilogue_clamps_the_norms_as_f_normalize():
    """A channel of zeros has cosine 0 with everything (F.normalize's eps), not NaN; a tiny one is
    divided by eps, not by its own norm, as channel_cosine does."""
    qk = _qk(1, 16, 300)
    qk[:, 3] = 0.0  # q_3
    qk[:, 16 + 5] = 1e-14  # k_5: |k_5| = 1.7e-13 < eps
    got = gram.head_gram_partials_to_cosine(_partials_in_torch(qk, 2, 128), eps=1e-12)
    want = head_blocks(channel_cosine(qk, eps=1e-12), 2)
    assert torch.isfinite(got).all() and (got[:, 0, 3] == 0).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_reference_is_what_mdta_computes():
    qk = _qk(2, 32, 200)
    mdta = MDTA(32, 4, bias=False, prior_channels=8, modulated=False)
    attn_input = (gram.head_cosine_reference(qk, 4) * mdta.temperature.float()).softmax(-1)
    w_out = mdta.project_out.weight.float().view(32, 4, 8)
    want = torch.einsum("ohd,bhde->bohe", w_out, attn_input).reshape(2, 32, 32)
    torch.testing.assert_close(mdta.mixing(qk), want)
    # on the CPU the public function is the reference
    torch.testing.assert_close(gram.head_cosine(qk, 4), gram.head_cosine_reference(qk, 4))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"head_cosine expects qk \(B, 2C, N\).* got qk \(96, 100\) and heads=1"):
        gram.head_cosine(torch.zeros(96, 100), 1)
    with pytest.raises(ValueError, match=r"got qk \(1, 95, 100\) and heads=1"):
        gram.head_cosine(torch.zeros(1, 95, 100), 1)
    with pytest.raises(ValueError, match=r"a head count dividing C, got qk \(1, 96, 100\) and heads=5"):
        gram.head_cosine(torch.zeros(1, 96, 100), 5)
    with pytest.raises(ValueError, match=r"heads=0"):
        gram.head_cosine(torch.zeros(1, 96, 100), 0)


def test_split_fills_the_gpu_with_long_ranges():
    """SPLIT depends on N, B * heads and the SM count only; ranges are multiples of 256 rows, at
    least 1024, and cover N with a partial last one at most."""
    assert gram.head_gram_split(921_600, 1, 132) == (360, 2560)  # level 1 of a 1280x720 frame: 2.7 a SM
    assert gram.head_gram_split(230_400, 2, 132) == (180, 1280)  # level 2, two heads
    assert gram.head_gram_split(57_600, 4, 132) == (57, 1024)  # level 3: ranges kept at 1024 rows
    assert gram.head_gram_split(700, 8, 132) == (1, 1024)
    assert gram.head_gram_split(0, 1, 132) == (1, 1024)  # one (empty) range: the partials are zeros
    for n in (1, 1023, 1025, 57_600, 230_400, 921_600, 2_088_960):
        for programs in (1, 2, 4, 8, 16):
            for sms in (78, 114, 132):
                split, rows = gram.head_gram_split(n, programs, sms)
                assert rows % 256 == 0 and rows >= 1024 and (split - 1) * rows < max(n, 1) <= split * rows
                if n >= 1024 * 4 * sms:  # large N: 2 to 4 programs a SM
                    assert 2 * sms <= split * programs <= 4 * sms, (n, programs, sms, split)


def test_compile_sees_the_partials_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode

    sms = sm_count(torch.device("cuda"))
    with FakeTensorMode():
        qkv = torch.empty(2, 5000, 3 * 96, device="cuda", dtype=torch.float16).transpose(1, 2)
        qk = qkv.narrow(1, 0, 192)  # (indexing a fake CUDA tensor needs CUDA; narrow does not)
        partials = torch.ops.hidiff.head_gram_partials(qk, 2)
    split, _ = gram.head_gram_split(5000, 4, sms)
    assert partials.shape == (2, 2, split, 50, 48) and partials.dtype == torch.float32


INTERPRETED = "import torch\n" + inspect.getsource(_qk) + textwrap.dedent("""
    from engines.kernels import head_gram as gram

    torch.manual_seed(0)
    kernel = gram.head_gram_kernel.fn  # the kernel under the autotuner, with explicit tiles
    # (B, C, heads, N), BLOCK_N, layout: d 48, 16, 20 and 96 (D_PAD 64, 16, 32, 128); N not a multiple
    # of BLOCK_N; SPLIT > 1 with a partial last range; a channel slice of qkv and a contiguous qk; each
    # way of summing the squares.
    for (b, c, heads, n), block_n, layout in (((1, 48, 1, 700), 64, "slice"), ((2, 96, 2, 2600), 128, "slice"),
                                              ((2, 64, 4, 1100), 64, "contiguous"), ((1, 40, 2, 333), 64, "contiguous"),
                                              ((2, 20, 1, 1500), 256, "slice"), ((1, 96, 1, 1030), 64, "slice")):
        qk = _qk(b, c, n, layout, torch.float16)
        assert qk.stride() == ((3 * c * n, 1, 3 * c) if layout == "slice" else (2 * c * n, n, 1))
        split, rows = gram.head_gram_split_for(qk, heads)
        want = gram.head_cosine_reference(qk.float(), heads)
        for squares in (3, 4):
            partials = gram.launch_head_gram(kernel, qk, heads, BLOCK_N=block_n, SQUARES=squares)
            assert partials.shape == (b, heads, split, c // heads + 2, c // heads)
            got = gram.head_gram_partials_to_cosine(partials)
            assert got.abs().max() > 0.3  # cosines of order one: the check is not of near-zeros
            torch.testing.assert_close(got, want, rtol=0, atol=1e-3)
        print("ok", b, c, heads, n, "split", split, "last range", n - (split - 1) * rows, "block", block_n, layout)
""")


@needs_triton
def test_kernel_in_tritons_interpreter_matches_the_reference():
    """Indexing, masks, strides and the split of the kernel, run by Triton's CPU interpreter
    (TRITON_INTERPRET=1, read when Triton is imported: hence a fresh interpreter process)."""
    printed = run_in_interpreter(INTERPRETED)
    assert printed.count("ok ") == 6
    assert "split 3 last range 552 block 128 slice" in printed  # SPLIT > 1, the last range partial
    assert "split 2 last range 76 block 64 contiguous" in printed


def _compiled(d: int, block_n: int, warps: int, stages: int, squares: int, capability: int = 90) -> dict[str, int]:
    """The kernel compiled for sm_``capability`` as a launch on MDTA's qk specialises it (channel stride 1,
    strides and ROWS multiples of 16, N and the head count not): REG, STACK, LOCAL and the shared
    memory in bytes."""
    from bench.kernel_sass import compile_cuda, resources

    types = {"qk_ptr": "*fp16", "out_ptr": "*fp32", "N": "i32", "ROWS": "i32", "HEADS": "i32", "stride_b": "i32",
             "stride_n": "i32"}
    compiled = compile_cuda(gram.head_gram_kernel.fn, types,
                            {"stride_c": 1, "D": d, "D_PAD": dot_block(d), "BLOCK_N": block_n, "SQUARES": squares},
                            warps, stages,
                            aligned=("qk_ptr", "out_ptr", "ROWS", "stride_b", "stride_n"), capability=capability)
    return {**resources(compiled), "shared": compiled.metadata.shared}


@needs_triton
@pytest.mark.parametrize("capability", CAPABILITIES)
def test_no_tile_spills_registers_or_overflows_shared_memory(capability):
    """Every tile the autotuner may pick compiles for an H100, an A100 and a Jetson Orin without
    spills at the GoPro model's heads (d 48: D_PAD 64; d 96 at the one-head full-resolution levels:
    D_PAD 128), within the card's shared memory a block."""
    for d in (48, 96):
        for block_n, warps, stages, squares in gram.TILES:
            if not gram.fits_registers(dot_block(d), warps, stages, squares, capability):
                continue
            usage = _compiled(d, block_n, warps, stages, squares, capability)
            assert fits(usage, capability), (d, block_n, warps, stages, squares, usage)
    # The check can fail: the 4-warp tiles left out at D_PAD 128 spill (the accumulators alone are 128
    # registers a thread and more), and before Hopper so do the 3-stage and SQUARES 4 tiles of 8 warps.
    assert not gram.fits_registers(128, 4, 3, 4, capability) and _compiled(96, 64, 4, 3, 4, capability)["STACK"] > 0
    if capability < 90:
        assert not gram.fits_registers(128, 8, 3, 3, capability) and _compiled(96, 64, 8, 3, 3, capability)["STACK"] > 0
    assert any(gram.fits_registers(128, *tile[1:], capability) for tile in gram.TILES)  # D_PAD 128 keeps a tile


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernel_matches_the_reference_at_the_models_shapes(dtype):
    """GoPro heads (d 48, and d 96 at decoder level 1), q and k as MDTA's channel slice of the
    channels-last qkv; a contiguous qk with two images and four heads."""
    torch.manual_seed(0)
    for b, c, heads, n, layout in ((1, 48, 1, 360 * 640, "slice"), (1, 96, 1, 360 * 640, "slice"),
                                   (1, 96, 2, 180 * 320, "slice"), (2, 192, 4, 90 * 160, "slice"),
                                   (1, 384, 8, 45 * 80, "slice"), (2, 192, 4, 90 * 160 + 7, "contiguous")):
        qk = _qk(b, c, n, layout, dtype, "cuda")
        got = gram.head_cosine(qk, heads)
        want = gram.head_cosine_reference(qk, heads)  # cuBLAS, float32 out
        assert got.shape == (b, heads, c // heads, c // heads) and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=1e-3)


@pytest.mark.gpu
def test_every_tile_matches_the_reference():
    torch.manual_seed(0)
    for c in (48, 96):
        qk = _qk(1, c, 180 * 320 + 5, "slice", torch.float16, "cuda")
        want = gram.head_cosine_reference(qk, 1)
        for block_n, warps, stages, squares in gram.TILES:
            partials = gram.launch_head_gram(gram.head_gram_kernel.fn, qk, 1, BLOCK_N=block_n, SQUARES=squares,
                                             num_warps=warps, num_stages=stages)
            torch.testing.assert_close(gram.head_gram_partials_to_cosine(partials), want, rtol=0, atol=1e-3)


@pytest.mark.gpu
def test_compiles_without_graph_breaks_or_output_fills():
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    qk = _qk(1, 96, 64 * 96, "slice", torch.float16, "cuda")
    temperature = torch.rand(2, 1, 1, device="cuda") + 0.5

    def attention(qk: torch.Tensor) -> torch.Tensor:  # MDTA's softmax over the cosines
        return (gram.head_cosine(qk, 2) * temperature).softmax(dim=-1)

    assert torch._dynamo.explain(attention)(qk).graph_break_count == 0
    torch._dynamo.reset()
    compiled, codes = run_and_get_code(torch.compile(attention, fullgraph=True), qk)
    code = "\n".join(codes)
    assert "hidiff.head_gram_partials" in code and 'float("nan")' not in code
    torch.testing.assert_close(compiled, attention(qk), rtol=1e-4, atol=1e-5)
