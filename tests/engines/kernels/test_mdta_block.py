"""MDTA in two kernels (engines.kernels.mdta_block): the references against the Transformer block's
own attention half, both passes through Triton's interpreter on the CPU and compiled on a GPU,
their registers for sm_80, sm_87 and sm_90, and the ops' shapes for torch.compile."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from triton_cpu import cuda_resources, fits, run_in_interpreter

from engines.kernels import halo_tiles as ht
from engines.kernels import mdta_block as mb
from engines.kernels.fuse import NormProjection
from engines.kernels.support import cdiv, dot_block, sm_count
from hidiff.config import RestormerConfig
from hidiff.restormer import TransformerBlock

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")


def _block(channels: int, heads: int, bias: bool, norm_kind: str) -> TransformerBlock:
    block = TransformerBlock(channels, heads, RestormerConfig(bias=bias, LayerNorm_type=norm_kind, embed_dim=2),
                             modulated=False).eval()
    with torch.no_grad():  # non-trivial norm, temperatures and biases
        block.norm1.body.weight.normal_(1.0, 0.3)
        block.attn.temperature.uniform_(0.5, 2.0)
        for p in block.attn.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.3)
    return block


def _weights(block: TransformerBlock) -> tuple:
    """The two passes' weights from a block: LN1 folded into the qkv projection; plain tensors."""
    norm = NormProjection(block.norm1, block.attn.qkv)
    conv = block.attn.qkv_dwconv
    weights = (norm.weight_t, norm.bias, ht.depthwise_taps(conv.weight, 3), conv.bias)
    return tuple(None if t is None else t.detach() for t in weights)


@pytest.mark.parametrize("norm_kind, bias, heads", [("WithBias", True, 2), ("BiasFree", False, 1)])
def test_references_are_the_blocks_attention_half(norm_kind, bias, heads):
    torch.manual_seed(0)
    block = _block(12, heads, bias, norm_kind)
    weights, norm = _weights(block), block.norm1
    with torch.no_grad():
        x = torch.randn(2, 12, 9, 13)
        expected = x + block.attn(norm(x))
        cosine = mb.mdta_cosine_reference(x, *weights, heads, 1e-5, norm_kind == "BiasFree")
        mixing = block.attn.mixing_from_cosine(cosine, x.dtype)
        got = mb.mdta_apply_reference(x, *weights, mixing, block.attn.project_out.bias, 1e-5, norm_kind == "BiasFree")
    assert cosine.shape == (2, heads, 12 // heads, 12 // heads)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_refused():
    x = torch.zeros(1, 8, 4, 4)
    with pytest.raises(ValueError, match=r"mdta_block expects x \(B, C, H, W\), w_qkv_t \(C, 3C\)"):
        mb.mdta_cosine(x, torch.zeros(8, 16), torch.zeros(24), torch.zeros(9, 24), None, 1, 1e-5)
    with pytest.raises(ValueError, match="3 heads do not divide 8 channels"):
        mb.mdta_cosine(x, torch.zeros(8, 24), torch.zeros(24), torch.zeros(9, 24), None, 3, 1e-5)
    with pytest.raises(ValueError, match=r"mixing matrices \(B, C, C\)"):
        mb.mdta_apply(x, torch.zeros(8, 24), torch.zeros(24), torch.zeros(9, 24), None, torch.zeros(8, 8), None,
                      1e-5)


def test_every_gopro_width_has_a_tile_and_wider_ones_take_the_references():
    for channels in (48, 96, 192, 384):  # heads of 48 channels
        for hopper in (True, False):
            fitting = [t for t in mb.GRAM_TILES if mb.gram_tile_fits(*t, dot_block(channels), dot_block(48), hopper)]
            assert fitting, (channels, hopper)
        assert ht.width_fits(channels)
    assert not any(mb.gram_tile_fits(*tile, dot_block(96), dot_block(96)) for tile in mb.GRAM_TILES)
    assert not ht.width_fits(1024)


INTERPRETED = """
import torch
from engines.kernels import halo_tiles as ht
from engines.kernels import mdta_block as mb
from engines.kernels.head_gram import head_gram_partials_to_cosine

torch.manual_seed(0)
# Partial tiles at the right and bottom edges, two images, heads of 6 channels (padded to 16), a
# partial last chunk of v (20 channels in chunks of 16), both norms; each program of pass 1 loops
# over 9 tiles (pass 2's persistent loop is the GDFN kernel's, looped in test_gdfn_block).
for (b, c, heads, h, w), (th, tw, block_p), chunk, bias, bias_free in (
        ((2, 12, 2, 9, 23), (4, 8, 32), 16, True, False),
        ((1, 20, 1, 19, 40), (8, 16, 16), 16, False, True)):
    x = torch.randn(b, c, h, w).to(memory_format=torch.channels_last)
    weights = (torch.randn(c, 3 * c) * 0.3, torch.randn(3 * c), ht.depthwise_taps(torch.randn(3 * c, 1, 3, 3) * 0.3, 3),
               torch.randn(3 * c) if bias else None)
    partials = mb.launch_mdta_gram(mb.mdta_gram_kernel.fn, x, *weights, heads, 1e-5, bias_free, TH=th, TW=tw,
                                   BLOCK_P=block_p, num_warps=4)
    expected = mb.mdta_cosine_reference(x, *weights, heads, 1e-5, bias_free)
    torch.testing.assert_close(head_gram_partials_to_cosine(partials), expected, rtol=1e-4, atol=1e-4)
    mixing = torch.randn(b, c, c) * 0.3
    b_out = torch.randn(c) if bias else None
    out = mb.launch_mdta_apply(ht.halo_block_kernel.fn, x, *weights, mixing, b_out, 1e-5, bias_free, TH=th, TW=tw,
                               BLOCK_P=block_p, CHUNK=chunk, PER_SM=1)
    assert out.is_contiguous(memory_format=torch.channels_last)
    want = mb.mdta_apply_reference(x, *weights, mixing, b_out, 1e-5, bias_free)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    print("ok", b, c, heads, h, w, partials.shape[2])
"""


@needs_triton
@pytest.mark.slow  # about 20 s in the interpreter
def test_both_passes_in_tritons_interpreter_match_the_references():
    """Indexing, masks, the halo, the heads' columns, the split of pass 1 and the per-image matrices
    of pass 2, by Triton's CPU interpreter."""
    assert run_in_interpreter(INTERPRETED).count("ok ") == 2


@needs_triton
@pytest.mark.slow  # 3 compilations, about 10 s
@pytest.mark.parametrize("capability", [90, 80, 87])
def test_no_tile_spills_registers(capability):
    """Each pass-1 tile at the widest GoPro map it takes, and pass 2 (the halo block kernel without
    the gate, a matrix per image) at 384 channels, compile for sm_90 (H100), sm_80 (A100) and
    sm_87 (Jetson Orin) without spills, within the card's shared memory."""
    for tile in mb.GRAM_TILES:
        th, tw, block_p, warps = tile
        c = max(c for c in (48, 96, 192, 384) if mb.gram_tile_fits(*tile, dot_block(c), 64, capability >= 90))
        usage = cuda_resources(
            mb.mdta_gram_kernel.fn, ("x_ptr", "w_in_ptr", "b_in_ptr", "taps_ptr", "dw_b_ptr", "out_ptr", "scratch_ptr"),
            {"C": c, "TAP_ROW": 3 * ht.tap_group(c), "HEADS": c // 48, "D": 48, "D_PAD": 64, "BLOCK_C": dot_block(c),
             "BIAS_FREE": False,
             "HAS_DW_BIAS": False, "TH": th, "TW": tw, "BLOCK_P": block_p}, warps,
            unaligned=("H", "W", "slot_elements"), scalars={"eps": "fp32"}, stages=1, capability=capability)
        assert fits(usage, capability), ("pass 1", capability, c, tile, usage)
    th, tw, block_p, chunk, warps, per_sm = next(t for t in ht.TILES if ht.tile_fits(t[0], t[1], t[2], 512,
                                                                                    capability >= 90, t[3], t[4]))
    usage = cuda_resources(
        ht.halo_block_kernel.fn,
        ("x_ptr", "w_in_ptr", "b_in_ptr", "taps_ptr", "dw_b_ptr", "w_out_ptr", "b_out_ptr", "y_ptr", "scratch_ptr"),
        {"C": 384, "HIDDEN": 384, "IN_COLS": 3 * 384, "IN_OFFSET": 2 * 384, "TAP_ROW": 3 * 384, "GATE": False,
         "OUT_PER_IMAGE": True,
         "BLOCK_C": 512, "BIAS_FREE": False, "HAS_DW_BIAS": False, "HAS_OUT_BIAS": True, "TH": th, "TW": tw,
         "BLOCK_P": block_p, "CHUNK": chunk, "PER_SM": per_sm},
        warps, unaligned=("B", "H", "W", "slot_elements"), scalars={"eps": "fp32"}, stages=1, capability=capability)
    assert fits(usage, capability), ("pass 2", capability, usage)


def test_compile_sees_the_output_shapes_and_layout():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        def empty(*shape: int) -> torch.Tensor:
            return torch.empty(*shape, device="cuda", dtype=torch.float16)

        x = empty(2, 96, 720, 1280)
        partials = torch.ops.hidiff.mdta_gram_partials(x, empty(96, 288), empty(288), empty(9, 288), None, 2,
                                                       1e-5, False)
        # 2 images x 2 heads: 3 programs per SM (99 per (image, head) on an H100's 132 SMs)
        split = mb.gram_split(2, 2, 720, 1280, sm_count(torch.device("cuda")))
        assert split == cdiv(3 * sm_count(torch.device("cuda")), 4)
        assert partials.shape == (2, 2, split, 50, 48) and partials.dtype == torch.float32
        out = torch.ops.hidiff.mdta_apply(x, empty(96, 288), empty(288), empty(9, 288), None, empty(2, 96, 96),
                                          None, 1e-5, False)
        assert out.shape == (2, 96, 720, 1280) and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.gpu
@pytest.mark.parametrize("norm_kind, bias", [("WithBias", True), ("BiasFree", False)])
def test_both_passes_match_the_references_on_the_gpu(norm_kind, bias):
    """Float16 at the GoPro widths and head counts, odd sizes (partial tiles), against float32."""
    torch.manual_seed(0)
    for c, heads, (h, w) in ((48, 1, (37, 70)), (96, 2, (20, 33)), (192, 4, (11, 17)), (384, 8, (6, 9))):
        block = _block(c, heads, bias, norm_kind)
        weights = [None if t is None else t.cuda().half() for t in _weights(block)]
        x = torch.randn(2, c, h, w, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
        eps, bias_free = block.norm1.eps, norm_kind == "BiasFree"
        cosine = mb.mdta_cosine(x, *weights, heads, eps, bias_free)
        floats = [None if t is None else t.float() for t in weights]
        torch.testing.assert_close(cosine, mb.mdta_cosine_reference(x.float(), *floats, heads, eps, bias_free),
                                   rtol=2e-2, atol=2e-2, msg=f"C={c}")
        mixing = torch.randn(2, c, c, device="cuda", dtype=torch.float16) * c ** -0.5
        b_out = block.attn.project_out.bias
        b_out = None if b_out is None else b_out.detach().cuda().half()
        got = mb.mdta_apply(x, *weights, mixing, b_out, eps, bias_free)
        expected = mb.mdta_apply_reference(x.float(), *floats, mixing.float(), None if b_out is None else b_out.float(),
                                           eps, bias_free)
        assert got.dtype == torch.float16 and got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2, msg=f"C={c}")


@pytest.mark.gpu
def test_the_fused_attention_half_matches_the_per_operation_kernels():
    """A FusedNormBlock's attention half with whole_mdta against the per-operation kernels, float16."""
    from engines.kernels.fuse import FusedNormBlock

    torch.manual_seed(0)
    block = _block(96, 2, False, "WithBias").cuda().half()
    x = torch.randn(1, 96, 72, 128, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = FusedNormBlock(block).attention(x)
        got = FusedNormBlock(block, whole_mdta=True).attention(x)
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)
