"""The whole GDFN kernel (engines.kernels.gdfn_block, engines.kernels.halo_tiles' kernel with the
gate): its reference against the Transformer block's own feed-forward half, the kernel through
Triton's interpreter on the CPU and compiled on a GPU, its registers for sm_80, sm_87 and sm_90,
and the op's shape for torch.compile."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from triton_cpu import cuda_resources, run_in_interpreter

from engines.kernels import gdfn_block as gb
from engines.kernels import halo_tiles as ht
from engines.kernels.fuse import NormProjection
from engines.kernels.support import dot_block
from hidiff.config import RestormerConfig
from hidiff.restormer import TransformerBlock

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")


def _block(channels: int, bias: bool, norm_kind: str) -> TransformerBlock:
    return TransformerBlock(channels, 1, RestormerConfig(bias=bias, LayerNorm_type=norm_kind, embed_dim=2),
                            modulated=False).eval()


def _block_weights(block: TransformerBlock) -> tuple:
    """gdfn_block's weights from a block: LN2 folded into project_in, project_out transposed; plain
    tensors (the op has no backward: torch.compile would trace one for weights that need grad)."""
    ffn = block.ffn
    norm_in = NormProjection(block.norm2, ffn.project_in)
    weights = (norm_in.weight_t, norm_in.bias, ht.depthwise_taps(ffn.dwconv.weight, 2), ffn.dwconv.bias,
               ffn.project_out.weight.flatten(1).t(), ffn.project_out.bias)
    return (*(None if t is None else t.detach() for t in weights), norm_in.eps, norm_in.bias_free)


@pytest.mark.parametrize("norm_kind, bias", [("WithBias", True), ("BiasFree", False)])
def test_reference_is_the_blocks_feed_forward_half(norm_kind, bias):
    torch.manual_seed(0)
    block = _block(12, bias, norm_kind)
    with torch.no_grad():
        block.norm2.body.weight.normal_(1.0, 0.3)
        x = torch.randn(2, 12, 9, 13)
        expected = x + block.ffn(block.norm2(x))
        got = gb.gdfn_block_reference(x, *_block_weights(block))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_refused():
    x = torch.zeros(1, 8, 4, 4)
    with pytest.raises(ValueError, match=r"gdfn_block expects x \(B, C, H, W\), w_in_t \(C, 2H\)"):
        gb.gdfn_block(x, torch.zeros(8, 10), torch.zeros(10), torch.zeros(9, 16), None, torch.zeros(4, 8), None,
                      1e-5)


def test_depthwise_taps_are_tap_major_in_padded_groups():
    weight = torch.randn(2 * 21, 1, 3, 3)
    taps = ht.depthwise_taps(weight, 2)
    assert taps.shape == (9, 2 * 24) and taps.is_contiguous()
    assert torch.equal(taps[4, :21], weight[:21, 0, 1, 1]) and torch.equal(taps[5, 24:45], weight[21:, 0, 1, 2])
    assert not taps[:, 21:24].any() and not taps[:, 45:].any()  # each group padded to 8 channels with zeros
    assert torch.equal(ht.depthwise_weight(taps, 42, 2), weight)
    with pytest.raises(ValueError, match="multiple of 4 groups"):
        ht.depthwise_taps(weight, 4)
    with pytest.raises(ValueError, match=r"\(N, 1, 3, 3\)"):
        ht.depthwise_taps(torch.randn(8, 1, 5, 5), 2)


def test_every_gopro_width_has_an_8_warp_tile_on_every_gpu():
    for channels in (48, 96, 192, 384):
        for hopper in (True, False):
            assert any(ht.tile_fits(th, tw, bp, dot_block(channels), hopper, chunk)
                       for th, tw, bp, chunk, warps, _ in ht.TILES if warps == 8), (channels, hopper)


INTERPRETED = """
import torch
from engines.kernels import gdfn_block as gb
from engines.kernels import halo_tiles as ht

kernel = ht.halo_block_kernel.fn  # the kernel under the autotuner, run with explicit tiles
torch.manual_seed(0)
# Partial tiles at the right and bottom edges, a partial last chunk of hidden channels (31 of 16 + 16),
# one partial chunk (21 of 32), channel counts that are not a power of two, both norms; and 143 tiles
# on the interpreter's 132 programs, so that programs loop over tiles and rewrite their scratch slots.
for (b, c, hidden, h, w), (th, tw, block_p, chunk), bias, bias_free in (
        ((1, 12, 31, 9, 23), (8, 8, 64, 16), False, True),
        ((1, 8, 21, 43, 100), (4, 8, 32, 32), True, False)):
    x = torch.randn(b, c, h, w).to(memory_format=torch.channels_last)
    weights = (torch.randn(c, 2 * hidden) * 0.3, torch.randn(2 * hidden),
               ht.depthwise_taps(torch.randn(2 * hidden, 1, 3, 3) * 0.3, 2),
               torch.randn(2 * hidden) if bias else None, torch.randn(hidden, c) * 0.3,
               torch.randn(c) if bias else None, 1e-5, bias_free)
    out = gb.launch_gdfn_block(kernel, x, *weights, TH=th, TW=tw, BLOCK_P=block_p, CHUNK=chunk, PER_SM=1)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, gb.gdfn_block_reference(x, *weights), rtol=1e-4, atol=1e-4)
    print("ok", b, c, hidden, h, w)
# float16, the GPU's path: the depthwise sums in float16 from the taps' two groups (hidden 20: the
# second group starts at column 24 of the taps, after the first's padding)
x = torch.randn(1, 16, 12, 20).to(memory_format=torch.channels_last)
weights = (torch.randn(16, 40) * 0.3, torch.randn(40), ht.depthwise_taps(torch.randn(40, 1, 3, 3) * 0.3, 2), None,
           torch.randn(20, 16) * 0.3, None)
halves = [None if t is None else t.half() for t in weights]
out = gb.launch_gdfn_block(kernel, x.half(), *halves, 1e-5, False, TH=4, TW=8, BLOCK_P=32, CHUNK=16, PER_SM=1)
expected = gb.gdfn_block_reference(x.half().float(), *[None if t is None else t.float() for t in halves], 1e-5, False)
torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)  # float16 outputs up to 8
print("ok float16")
"""


@needs_triton
@pytest.mark.slow  # about 15 s in the interpreter
def test_kernel_in_tritons_interpreter_matches_reference():
    """Indexing, masks, the halo, the chunks, the persistent loop and the float16 path, by Triton's CPU
    interpreter."""
    assert run_in_interpreter(INTERPRETED).count("ok ") == 3


def _resources(c: int, th: int, tw: int, block_p: int, chunk: int, warps: int, per_sm: int,
               capability: int, aligned: bool = False) -> dict[str, int]:
    """The float16 kernel's registers and spills on sm_``capability`` at width c (hidden int(2.66 c)),
    compiled for a map whose height, width and scratch slot are multiples of 16 (``aligned``: 1280x720)
    or not (1920x1080: ptxas then unrolls other loops)."""
    hidden = int(c * 2.66)
    return cuda_resources(
        ht.halo_block_kernel.fn,
        ("x_ptr", "w_in_ptr", "b_in_ptr", "taps_ptr", "dw_b_ptr", "w_out_ptr", "b_out_ptr", "y_ptr", "scratch_ptr"),
        {"C": c, "HIDDEN": hidden, "IN_COLS": 2 * hidden, "IN_OFFSET": 0, "TAP_ROW": 2 * ht.tap_group(hidden),
         "GATE": True, "OUT_PER_IMAGE": False,
         "BLOCK_C": dot_block(c),
         "BIAS_FREE": False, "HAS_DW_BIAS": False, "HAS_OUT_BIAS": False, "TH": th, "TW": tw, "BLOCK_P": block_p,
         "CHUNK": chunk, "PER_SM": per_sm},
        warps, unaligned=("B",) if aligned else ("B", "H", "W", "slot_elements"), scalars={"eps": "fp32"}, stages=1,
        capability=capability)


@needs_triton
@pytest.mark.slow  # 40 compilations, about 80 s
@pytest.mark.parametrize("capability", [90, 80, 87])
def test_no_tile_spills_registers(capability):
    """Each tile, at the widest GoPro map it takes on the GPU (sm_90 H100, sm_80 A100, sm_87 Jetson
    Orin), compiles without spilling registers; without the tensor memory accelerator."""
    hopper = capability >= 90
    for tile in ht.TILES:
        th, tw, block_p, chunk, warps, _ = tile
        widths = [c for c in (48, 96, 192, 384) if ht.tile_fits(th, tw, block_p, dot_block(c), hopper, chunk, warps)]
        if widths:
            for aligned in (False, True):
                usage = _resources(max(widths), *tile, capability, aligned)
                assert usage["STACK"] == 0 and usage["LOCAL"] == 0, (capability, max(widths), tile, aligned, usage)
    if not hopper:  # the check can fail: a tile that tile_fits leaves out before Hopper spills there
        assert _resources(192, 8, 16, 64, 32, 16, 1, capability)["STACK"] > 0


def test_compile_sees_the_output_shape_and_layout():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        def empty(*shape: int) -> torch.Tensor:
            return torch.empty(*shape, device="cuda", dtype=torch.float16)

        out = torch.ops.hidiff.gdfn_block(empty(1, 48, 8, 12), empty(48, 256), empty(256), empty(9, 256), None,
                                          empty(128, 48), None, 1e-5, False)
        assert out.shape == (1, 48, 8, 12) and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.gpu
@pytest.mark.parametrize("norm_kind, bias", [("WithBias", True), ("BiasFree", False)])
def test_kernel_matches_reference_on_the_gpu(norm_kind, bias):
    """Float16 at the GoPro widths, odd sizes (partial tiles), against the float32 reference."""
    torch.manual_seed(0)
    for c, (h, w) in ((48, (37, 70)), (96, (20, 33)), (192, (11, 17)), (384, (6, 9))):
        block = _block(c, bias, norm_kind)
        weights = [t.cuda().half() if isinstance(t, torch.Tensor) else t for t in _block_weights(block)]
        x = torch.randn(2, c, h, w, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
        got = gb.gdfn_block(x, *weights)
        expected = gb.gdfn_block_reference(x.float(), *[t.float() if isinstance(t, torch.Tensor) and t.is_floating_point()
                                                       else t for t in weights])
        assert got.dtype == torch.float16 and got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=2e-2, msg=f"C={c}")


@pytest.mark.gpu
def test_compiles_without_graph_breaks():
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    block = _block(48, False, "WithBias")
    weights = [t.cuda().half() if isinstance(t, torch.Tensor) else t for t in _block_weights(block)]
    x = torch.randn(1, 48, 16, 24, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)

    def ffn(x: torch.Tensor) -> torch.Tensor:
        return gb.gdfn_block(x, *weights) * 2

    assert torch._dynamo.explain(ffn)(x).graph_break_count == 0
    torch._dynamo.reset()
    compiled, codes = run_and_get_code(torch.compile(ffn, fullgraph=True), x)
    assert "hidiff.gdfn_block" in "\n".join(codes)
    # float16 outputs; the autotuner may pick another tile (another summation order) for each
    torch.testing.assert_close(compiled, ffn(x), rtol=1e-2, atol=2e-3)
