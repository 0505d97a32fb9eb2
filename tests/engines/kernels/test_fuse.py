"""engines.kernels.fuse: each switch of fuse_restormer swaps the modules it names, the fused modules
compute the Restormer's own function (on the CPU through the PyTorch references), and on a GPU
they call the ops their switches name and match the unfused FP16 model."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from conftest import tiny_config
from torch.utils._python_dispatch import TorchDispatchMode

from engines.kernels import fuse_restormer
from engines.kernels.fuse import FusedGateGDFN, FusedHIM, FusedNormBlock
from engines.torch_backend import torch_engines
from engines.torch_settings import TorchSettings
from hidiff.config import RestormerConfig
from hidiff.model import HIDiff
from hidiff.restormer import GDFN, HIM, LayerNorm, PriorGuidedRestormer, TransformerBlock


def _restormer(norm_kind: str = "WithBias", bias: bool = False) -> PriorGuidedRestormer:
    """A small Restormer whose norms have non-trivial affine parameters (fresh ones are 1 and 0)."""
    torch.manual_seed(0)
    model = PriorGuidedRestormer(RestormerConfig(dim=16, num_blocks=(1, 1, 1, 2), num_refinement_blocks=1,
                                                 LayerNorm_type=norm_kind, bias=bias)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LayerNorm):
                module.body.weight.normal_(1.0, 0.3)
                if module.body.bias is not None:
                    module.body.bias.normal_(0.0, 0.3)
    return model


def _feeds(model: PriorGuidedRestormer, **device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.rand(2, 3, 24, 40, **device),
            torch.randn(2, model.cfg.group ** 2, 4 * model.cfg.embed_dim, **device))


def _count(model: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("norm_kind, bias", [("WithBias", False), ("WithBias", True), ("BiasFree", True)])
@pytest.mark.parametrize("head_gram", [True, False])
def test_every_switch_swaps_its_modules_and_keeps_the_output(norm_kind, bias, head_gram):
    """Float32 on the CPU (the references): the folding (LN's affine into W, the residuals into
    the products, HIM into per-image matrices) is the Restormer's own computation."""
    model = _restormer(norm_kind, bias)
    gdfns, hims = _count(model, GDFN), _count(model, HIM)
    unmodulated = sum(not b.attn.modulated for b in model.modules() if isinstance(b, TransformerBlock))
    assert 0 < unmodulated < _count(model, TransformerBlock) and hims > 0
    fused = copy.deepcopy(model)
    assert fuse_restormer(fused, head_gram=head_gram) is None
    assert _count(fused, FusedGateGDFN) == gdfns and _count(fused, GDFN) == 0
    assert _count(fused, FusedNormBlock) == unmodulated
    assert all(b.head_gram is head_gram for b in fused.modules() if isinstance(b, FusedNormBlock))
    assert _count(fused, FusedHIM) == hims and _count(fused, HIM) == 0
    feeds = _feeds(model)
    with torch.no_grad():
        torch.testing.assert_close(fused(*feeds), model(*feeds), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("switch, kind, original", [("gates", FusedGateGDFN, GDFN), ("norms", FusedNormBlock, None),
                                                    ("prior_attention", FusedHIM, HIM)])
def test_each_switch_alone_swaps_only_its_modules(switch, kind, original):
    model = _restormer()
    fused = copy.deepcopy(model)
    fuse_restormer(fused, **{"gates": False, "norms": False, "prior_attention": False, "head_gram": False,
                             switch: True})
    swapped = {k: _count(fused, k) for k in (FusedGateGDFN, FusedNormBlock, FusedHIM)}
    assert swapped.pop(kind) > 0 and not any(swapped.values())
    if original is not None:
        assert _count(fused, original) == 0
    feeds = _feeds(model)
    with torch.no_grad():
        torch.testing.assert_close(fused(*feeds), model(*feeds), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("switch", ["whole_gdfn", "whole_mdta"])
@pytest.mark.parametrize("norm_kind, bias", [("WithBias", False), ("BiasFree", True)])
def test_the_whole_block_switches_keep_the_output(norm_kind, bias, switch):
    """Float32 on the CPU: gdfn_block's and mdta_block's references in every block that norms=True
    fuses are the block's own halves (the LNs' affine folded into the projections, the residuals
    added, MDTA's softmax folded with its output projection)."""
    model = _restormer(norm_kind, bias)
    fused = copy.deepcopy(model)
    fuse_restormer(fused, **{switch: True})
    blocks = [b for b in fused.modules() if isinstance(b, FusedNormBlock)]
    assert blocks and all(getattr(b, switch) for b in blocks)
    feeds = _feeds(model)
    with torch.no_grad():
        torch.testing.assert_close(fused(*feeds), model(*feeds), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("switch", ["head_gram", "whole_gdfn", "whole_mdta"])
def test_a_switch_inside_the_norm_blocks_without_norms_is_refused(switch):
    with pytest.raises(ValueError, match=f"{switch}=True runs inside the blocks that norms=True fuses"):
        fuse_restormer(_restormer(), **{"norms": False, "head_gram": False, switch: True})


def test_a_modulated_block_is_refused():
    model = _restormer()
    with pytest.raises(ValueError, match="needs a block without the prior's modulation"):
        FusedNormBlock(model.latent.blocks[0])


class _OpNames(TorchDispatchMode):
    """The names of the operators called inside the mode, e.g. ``hidiff.norm_conv1x1``."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.names.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


KERNEL_OPS = {"gates": {"hidiff.gated_dwconv3x3"}, "norms": {"hidiff.norm_conv1x1", "hidiff.conv1x1_residual"},
              "head_gram": {"hidiff.head_gram_partials"}, "prior_attention": {"hidiff.prior_attention"},
              "whole_gdfn": {"hidiff.gdfn_block"}, "whole_mdta": {"hidiff.mdta_gram_partials", "hidiff.mdta_apply"}}
DEFAULT_SWITCHES = {"gates": True, "norms": True, "head_gram": True, "prior_attention": True, "whole_gdfn": False,
                    "whole_mdta": False}


@pytest.mark.gpu
@pytest.mark.parametrize("switches", [dict(), dict(gates=False), dict(head_gram=False),
                                      dict(norms=False, head_gram=False), dict(prior_attention=False),
                                      dict(whole_gdfn=True), dict(whole_mdta=True, head_gram=False)])
def test_on_the_gpu_the_switched_on_kernels_run(switches):
    """Float16 channels-last CUDA tensors: the model calls the op of every switch that is on and of
    none that is off."""
    model = _restormer().to("cuda", torch.float16).to(memory_format=torch.channels_last)
    fuse_restormer(model, **switches)
    blur, prior = (t.half() for t in _feeds(model, device="cuda"))
    with _OpNames() as called, torch.no_grad():
        model(blur.contiguous(memory_format=torch.channels_last), prior)
    for switch, ops in KERNEL_OPS.items():
        assert (ops <= called.names) is switches.get(switch, DEFAULT_SWITCHES[switch]), (switch, sorted(called.names))


@pytest.mark.gpu
@pytest.mark.parametrize("switch", ["whole_gdfn", "whole_mdta"])
def test_the_whole_block_kernels_keep_the_fp16_restormers_output(switch):
    """The whole-block kernels (no preset takes them) in every block that norms=True fuses, against
    the same float16 channels-last Restormer without fused kernels."""
    model = _restormer().to("cuda", torch.float16).to(memory_format=torch.channels_last)
    fused = copy.deepcopy(model)
    fuse_restormer(fused, **{switch: True})
    blur, prior = (t.half() for t in _feeds(model, device="cuda"))
    blur = blur.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got, expected = fused(blur, prior), model(blur, prior)
    assert torch.isfinite(got).all()
    assert (got.float() - expected.float()).abs().max().item() < 1e-2  # two float16 computations


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_the_torch_backend_refuses_fused_kernels_on_the_cpu():
    for field in ("fuse_gdfn_gate", "fuse_block_norms", "fuse_prior_attention"):
        settings = TorchSettings(channels_last=True, **{field: True})
        with pytest.raises(ValueError, match=rf"{field} need\(s\) a CUDA device, got cpu"):
            torch_engines(HIDiff(tiny_config()).eval(), "cpu", settings=settings)


# (channels, heads, tokens, norm kind, bias): the GoPro model's three HIM levels (16 tokens at the
# first, 4 below), and a head count and token count that need padding columns
HIM_CASES = ((48, 1, 16, "WithBias", False), (96, 2, 4, "WithBias", True), (192, 4, 4, "BiasFree", False),
             (20, 4, 3, "WithBias", True))


def _him(dim: int, heads: int, norm_kind: str, bias: bool, prior_channels: int = 64) -> HIM:
    him = HIM(dim, heads, bias, prior_channels, norm_kind).eval()
    with torch.no_grad():  # non-trivial norms, biases and products
        for p in him.parameters():
            p.normal_(0.0, 0.3)
    return him


@pytest.mark.parametrize("dim, heads, tokens, norm_kind, bias", HIM_CASES)
def test_folded_him_computes_him(dim, heads, tokens, norm_kind, bias):
    torch.manual_seed(0)
    him = _him(dim, heads, norm_kind, bias)
    x, prior = torch.randn(2, dim, 5, 7), torch.randn(2, tokens, 64)
    with torch.no_grad():
        torch.testing.assert_close(FusedHIM(him)(x, prior), him(x, prior), rtol=1e-5, atol=2e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dim, heads, tokens, norm_kind, bias", HIM_CASES)
def test_fused_him_matches_the_module_on_the_gpu(dim, heads, tokens, norm_kind, bias):
    torch.manual_seed(0)
    him = _him(dim, heads, norm_kind, bias).cuda()
    x = torch.randn(2, dim, 45, 80, device="cuda").to(memory_format=torch.channels_last)
    prior = torch.randn(2, tokens, 64, device="cuda")
    with torch.no_grad():
        want = him(x, prior)
        half = FusedHIM(him.half())
        got = half(x.half(), prior.half())
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
def test_fused_him_compiles_without_graph_breaks():
    """The op inside a compiled graph, called as one opaque operation. (No check for NaN in the
    generated code: the op allocates its own output, which inductor cannot fill, and inductor's
    kernels for the small products before it may hold a NaN constant of their own.)"""
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    him = FusedHIM(_him(48, 1, "WithBias", False).cuda().half())
    x = torch.randn(1, 48, 16, 24, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
    prior = torch.randn(1, 16, 64, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        explained = torch._dynamo.explain(him)(x, prior)
        assert explained.graph_break_count == 0, explained.break_reasons
        torch._dynamo.reset()
        compiled, codes = run_and_get_code(torch.compile(him, fullgraph=True), x, prior)
        code = "\n".join(codes)
        assert "hidiff.prior_attention" in code, code[-3000:]
        torch.testing.assert_close(compiled, him(x, prior), rtol=1e-2, atol=2e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("fuse_gates, fuse_norms", [(True, False), (False, True), (True, True)])
def test_fused_fp16_restormer_matches_the_unfused_one(fuse_gates, fuse_norms):
    model = HIDiff(tiny_config()).eval()
    with torch.no_grad():  # non-trivial norms
        for module in model.restormer.modules():
            if isinstance(module, LayerNorm):
                module.body.weight.normal_(1.0, 0.3)
    plain_settings = TorchSettings.preset("channels-last")
    plain = torch_engines(model, "cuda:0", "fp16", plain_settings)["restormer"]
    fused_settings = plain_settings.replace(fuse_gdfn_gate=fuse_gates, fuse_block_norms=fuse_norms,
                                            fuse_prior_attention=fuse_norms)
    fused = torch_engines(model, "cuda:0", "fp16", fused_settings)["restormer"]
    assert (_count(fused.module, FusedGateGDFN) > 0) is fuse_gates
    assert (_count(fused.module, FusedNormBlock) > 0) is fuse_norms and (_count(fused.module, FusedHIM) > 0) is fuse_norms
    assert _count(plain.module, FusedGateGDFN) + _count(plain.module, FusedNormBlock) == 0
    feeds = {"blur": torch.rand(1, 3, 48, 80, device="cuda"), "prior": torch.randn(1, *model.prior_shape, device="cuda")}
    got, expected = fused.infer(feeds)["sharp"], plain.infer(feeds)["sharp"]
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max().item() < 1e-2  # two float16 computations, rounded differently
