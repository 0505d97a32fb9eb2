"""HI-Diff components pinned against the official computation, written out independently here."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hidiff.config import HIDiffConfig, RestormerConfig
from hidiff.latent_encoder import adaptive_avg_pool2d
from hidiff.model import HIDiff, crop_image, pad_image
from hidiff.restormer import HIM, MDTA, LayerNorm, PriorGuidedRestormer, channel_cosine


def official_layernorm(x4d, weight, bias):
    # Official WithBias_LayerNorm on 'b c h w -> b (h w) c': mean, biased variance, eps 1e-5.
    x = x4d.flatten(2).transpose(1, 2)
    mu = x.mean(-1, keepdim=True)
    sigma = x.var(-1, keepdim=True, unbiased=False)
    y = (x - mu) / torch.sqrt(sigma + 1e-5) * weight + bias
    b, c, h, w = x4d.shape
    return y.transpose(1, 2).reshape(b, c, h, w)


def test_layernorm_over_channels_matches_official_formula():
    torch.manual_seed(0)
    ln = LayerNorm(12)
    nn.init.normal_(ln.body.weight)
    nn.init.normal_(ln.body.bias)
    x = torch.randn(2, 12, 5, 7)
    torch.testing.assert_close(ln(x), official_layernorm(x, ln.body.weight, ln.body.bias), rtol=1e-5, atol=1e-5)


def test_biasfree_layernorm_divides_by_std_without_centering():
    ln = LayerNorm(6, "BiasFree")
    assert ln.body.bias is None
    x = torch.randn(1, 6, 3, 3) + 3.0
    t = x.flatten(2).transpose(1, 2)
    want = (t / torch.sqrt(t.var(-1, keepdim=True, unbiased=False) + 1e-5)).transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(ln(x), want)


def test_mdta_is_channel_attention_with_normalised_qk():
    torch.manual_seed(0)
    attn = MDTA(dim=8, num_heads=2, bias=False, prior_channels=16, modulated=False)
    nn.init.uniform_(attn.temperature, 0.5, 2.0)
    x = torch.randn(2, 8, 6, 5)
    qkv = attn.qkv_dwconv(attn.qkv(x))
    q, k, v = (t.reshape(2, 2, 4, 30) for t in qkv.chunk(3, 1))
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    a = torch.einsum("bhcn,bhdn->bhcd", q, k) * attn.temperature
    out = torch.einsum("bhcd,bhdn->bhcn", a.softmax(-1), v).reshape(2, 8, 6, 5)
    torch.testing.assert_close(attn(x), attn.project_out(out), rtol=1e-5, atol=1e-5)


def test_an_exported_channel_cosine_has_no_bmm_with_an_out_dtype():
    # AOTInductor's C shim (torch 2.11) lacks bmm.dtype: a CUDA package that held one failed to compile.
    # Meta tensors take the CUDA path, so the export below sees what a CUDA export sees.
    class Cosine(nn.Module):
        def forward(self, qk):
            return channel_cosine(qk)

    with torch.no_grad():
        program = torch.export.export(Cosine(), (torch.empty(1, 8, 64, dtype=torch.float16, device="meta"),))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "aten.bmm.default" in targets and "aten.bmm.dtype" not in targets, targets


@pytest.mark.parametrize("bias", [False, True])
def test_mdta_gives_the_same_result_in_channels_last_memory(bias):
    torch.manual_seed(1)
    attn = MDTA(dim=8, num_heads=2, bias=bias, prior_channels=16, modulated=False)
    x = torch.randn(2, 8, 6, 5)
    want = attn(x)
    attn_cl = attn.to(memory_format=torch.channels_last)
    got = attn_cl(x.to(memory_format=torch.channels_last))
    assert got.is_contiguous(memory_format=torch.channels_last)  # no layout change inside the block
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_restormer_gives_the_same_result_in_channels_last_memory(tiny_model):
    torch.manual_seed(2)
    blur, prior = torch.rand(1, 3, 24, 32), torch.randn(1, *tiny_model.prior_shape)
    want = tiny_model.restormer(blur, prior)
    restormer = copy.deepcopy(tiny_model.restormer).to(memory_format=torch.channels_last)
    got = restormer(blur.to(memory_format=torch.channels_last), prior)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_him_cross_attends_from_pixels_to_prior_tokens():
    torch.manual_seed(0)
    him = HIM(dim=8, num_heads=2, bias=False, prior_channels=16, norm_kind="WithBias")
    x, prior = torch.randn(2, 8, 4, 3), torch.randn(2, 4, 16)
    tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C)
    ln = lambda t, m: F.layer_norm(t, (t.shape[-1],), m.body.weight, m.body.bias, 1e-5)  # noqa: E731
    q = him.q(ln(tokens, him.norm1)).reshape(2, 12, 2, 4)
    k, v = him.kv(ln(prior, him.norm2)).chunk(2, -1)
    k, v = k.reshape(2, 4, 2, 4), v.reshape(2, 4, 2, 4)
    a = (torch.einsum("bnhc,bmhc->bhnm", q, k) * 4**-0.5).softmax(-1)
    out = torch.einsum("bhnm,bmhc->bnhc", a, v).reshape(2, 12, 8)
    want = (tokens + him.proj(out)).transpose(1, 2).reshape(2, 8, 4, 3)
    torch.testing.assert_close(him(x, prior), want, rtol=1e-5, atol=1e-5)


def test_multi_scale_prior_shapes():
    net = PriorGuidedRestormer(RestormerConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, embed_dim=8))
    z1, z2, z3 = net.multi_scale_prior(torch.randn(3, 16, 32))
    assert (z1.shape, z2.shape, z3.shape) == ((3, 16, 32), (3, 4, 32), (3, 32))


@pytest.mark.parametrize("size", [(16, 16), (20, 36), (9, 13), (44, 8), (5, 5)])
def test_adaptive_pool_equals_torch_for_any_size(size):
    x = torch.randn(2, 3, *size)
    torch.testing.assert_close(adaptive_avg_pool2d(x, 4), nn.AdaptiveAvgPool2d(4)(x), rtol=1e-6, atol=1e-6)


def test_pad_reflects_to_multiple_of_8_and_crop_restores():
    x = torch.arange(2 * 3 * 13 * 17, dtype=torch.float32).reshape(2, 3, 13, 17)
    padded, (ph, pw) = pad_image(x)
    assert padded.shape == (2, 3, 16, 24) and (ph, pw) == (3, 7)
    torch.testing.assert_close(padded, F.pad(x, (0, 7, 0, 3), mode="reflect"))
    assert torch.equal(crop_image(padded, 13, 17), x)
    same, amounts = pad_image(torch.zeros(1, 3, 16, 8))
    assert amounts == (0, 0) and same.shape == (1, 3, 16, 8)


def test_the_padding_multiple_is_the_restormers_downsampling(tiny_model):
    from hidiff.model import MULTIPLE
    from hidiff.restormer import Downsample

    halvings = sum(isinstance(m, Downsample) for m in tiny_model.restormer.modules())
    assert MULTIPLE == 2**halvings == 8
    out = tiny_model.restormer(torch.rand(1, 3, MULTIPLE, 2 * MULTIPLE), torch.randn(1, *tiny_model.prior_shape))
    assert out.shape == (1, 3, MULTIPLE, 2 * MULTIPLE)


def test_forward_is_the_official_loop(tiny_model):
    """Pad -> c = LE_DM -> 8 reverse steps with t + 1 -> Restormer -> crop, written out by hand."""
    m = tiny_model
    g = torch.Generator().manual_seed(3)
    blur, noise = torch.rand(2, 3, 30, 21, generator=g), torch.randn(2, 16, 32, generator=g)
    x = F.pad(blur, (0, 3, 0, 2), mode="reflect")
    c = m.le_dm(x)
    z = noise
    s = m.schedule
    for t in reversed(range(8)):
        eps = m.denoiser(z, c, torch.full(z.shape, t + 1, dtype=torch.long)[:, 0, 0])
        x0 = (s.sqrt_recip_alphas_cumprod[t] * z - s.sqrt_recipm1_alphas_cumprod[t] * eps).clamp(-1, 1)
        z = s.posterior_mean_coef1[t] * x0 + s.posterior_mean_coef2[t] * z
    want = m.restormer(x, z)[:, :, :30, :21]
    with torch.no_grad():
        got = m(blur, noise)
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-6)


def test_denoiser_time_embedding_matches_full_tensor_form(tiny_model):
    d = tiny_model.denoiser
    z, c = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    full = torch.full(z.shape, 5, dtype=torch.long)  # the official call passes t of z's full shape
    manual = d.final_layer(
        d.blocks[0](d.first_layer(torch.cat([z, full * d.time_mlp, c], dim=-1)))
    )
    torch.testing.assert_close(d(z, c, torch.tensor([5, 5])), manual)


def test_same_blur_and_noise_give_identical_bits(tiny_model):
    g = torch.Generator().manual_seed(0)
    blur = torch.rand(1, 3, 24, 40, generator=g)
    with torch.no_grad():
        a = tiny_model(blur, generator=torch.Generator().manual_seed(7))
        b = tiny_model(blur, generator=torch.Generator().manual_seed(7))
        c = tiny_model(blur, noise=tiny_model.make_noise(1, torch.Generator().manual_seed(7)))
        d = tiny_model(blur, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, d)


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (torch.rand(3, 16, 16), ValueError, ["rank 3", "(B, 3, H, W)"]),
        (torch.rand(1, 4, 16, 16), ValueError, ["4 channels", "expected 3"]),
        (torch.randint(0, 255, (1, 3, 16, 16), dtype=torch.uint8), TypeError, ["torch.uint8", "/ 255"]),
        (torch.rand(0, 3, 16, 16), ValueError, ["empty"]),
        ([[1.0]], TypeError, ["torch.Tensor", "list"]),
    ],
)
def test_bad_input_is_refused_with_what_was_received(tiny_model, bad, error, words):
    with pytest.raises(error) as info:
        tiny_model(bad)
    for w in words:
        assert w in str(info.value)


def test_wrong_noise_shape_is_refused(tiny_model):
    with pytest.raises(ValueError, match=r"noise has shape \(1, 16, 8\); expected \(1, 16, 32\)"):
        tiny_model(torch.rand(1, 3, 16, 16), noise=torch.randn(1, 16, 8))


def test_gopro_preset_size_and_cost_match_paper_table4():
    """28.49 M parameters and 142.62 G MACs for 3x256x256 (paper Table 4), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):  # shapes only: counting needs no arithmetic
        model = HIDiff(HIDiffConfig()).eval()
        blur, noise = torch.rand(1, 3, 256, 256), torch.randn(1, 16, 256)
    assert round(model.num_parameters() / 1e6, 2) == 28.49
    assert round(model.num_parameters("restormer") / 1e6, 2) == 25.30
    assert round(model.num_parameters("le_dm") / 1e6, 2) == 0.56
    assert round(model.num_parameters("denoiser") / 1e6, 2) == 2.63
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(blur, noise=noise)
    macs = counter.get_total_flops() / 2  # the counter reports 2 FLOPs per multiply-accumulate
    # Our MDTA reassociates the paper's attention (one Gram product [q; k][q; k]^T of 2C x 2C, and
    # the output projection folded into the product with v): per block c^2 HW (4 - 2/heads) MACs
    # more than the paper's per-head products plus 1x1 projection, and c^3/heads to fold the
    # projection into the attention matrix. Undo that to compare with the paper's count.
    cfg = model.config.network_g
    d, (h1, h2, h3, h4), (b1, b2, b3, b4) = cfg.dim, cfg.heads, cfg.num_blocks
    hw = 256 * 256
    levels = [  # (channels, heads, blocks, pixels)
        (d, h1, b1, hw), (2 * d, h2, b2, hw // 4), (4 * d, h3, b3, hw // 16), (8 * d, h4, b4, hw // 64),
        (4 * d, h3, b3, hw // 16), (2 * d, h2, b2, hw // 4), (2 * d, h1, b1, hw), (2 * d, h1, cfg.num_refinement_blocks, hw),
    ]
    reassociation = sum(blocks * (c * c * px * (4 - 2 / heads) + c**3 / heads) for c, heads, blocks, px in levels)
    assert round(reassociation / 1e9, 2) == 23.71  # the Gram's extra products: 17% more MACs, on tensor cores
    assert round((macs - reassociation) / 1e9, 2) == 142.62
    assert math.isfinite(macs)
