"""bench/traffic.py: the per-kind byte and FLOP ledger of a Restormer frame, checked against
counts made independently (module hooks, torch's FlopCounterMode)."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config
from torch.utils.flop_counter import FlopCounterMode

from bench import traffic
from bench.inputs import ImageSize, engine_restormer
from hidiff.restormer import GDFN, TransformerBlock

SIZE = ImageSize.parse("64x40")


def meta_restormer(config):
    return engine_restormer(config, SIZE, "meta", torch.float16)


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def test_1x1_convolutions_move_their_inputs_outputs_and_weights():
    """The GEMM row equals the sum over the 1x1 Conv2d modules of what they read and write,
    counted with forward hooks."""
    restormer, blur, prior = meta_restormer(tiny_config())
    counted = []

    def hook(module, args, out):
        counted.append(nbytes(args[0]) + nbytes(out) + nbytes(module.weight)
                       + (nbytes(module.bias) if module.bias is not None else 0))

    for module in restormer.modules():
        if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1):
            module.register_forward_hook(hook)
    with torch.no_grad():
        restormer(blur, prior)
    work = traffic.frame_work(tiny_config(), SIZE)["1x1 convolutions (GEMMs)"]
    assert work.calls == len(counted) > 0
    assert work.bytes_fused == work.bytes_per_op == sum(counted)


def test_flops_agree_with_torchs_flop_counter():
    restormer, blur, prior = meta_restormer(tiny_config())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        restormer(blur, prior)
    work = traffic.frame_work(tiny_config(), SIZE)
    assert sum(w.flops for w in work.values()) == counter.get_total_flops() > 0


def test_fused_bytes_never_exceed_op_by_op_and_the_gate_halves_the_convolution_output():
    work = traffic.frame_work(tiny_config(), SIZE)
    assert set(work) <= set(traffic.KINDS)
    for w in work.values():
        assert 0 <= w.bytes_fused <= w.bytes_per_op
    assert work["norms, activations, residuals"].bytes_fused == 0 < work["norms, activations, residuals"].bytes_per_op
    gate = work["GDFN depthwise 3x3 + gate"]
    # Each GDFN of the tiny model: 2 x hidden channels in, hidden out, at its level's size (padded to 8 channels).
    restormer, blur, prior = meta_restormer(tiny_config())
    assert gate.ops["convolution"] == sum(isinstance(m, GDFN) for m in restormer.modules())
    assert {"gelu", "mul"} <= set(gate.ops)
    expected = []

    def hook(module, args, out):
        expected.append(nbytes(args[0]) + nbytes(out) // 2 + nbytes(module.weight))

    for name, module in restormer.named_modules():
        if name.endswith("ffn.dwconv"):
            module.register_forward_hook(hook)
    with torch.no_grad():
        restormer(blur, prior)
    assert gate.bytes_fused == sum(expected)


def test_gram_product_reads_its_operand_once():
    """[q; k] and its transpose are one memory region: the products' bytes count it once."""
    work = traffic.frame_work(tiny_config(), SIZE)["MDTA products (Gram, mixing)"]
    assert work.ops["bmm"] > 0 and work.bytes_fused == work.bytes_per_op


def test_whole_blocks_move_five_passes_over_x_per_unmodulated_block():
    """The whole-block formulation: each unmodulated block's GDFN and MDTA move nothing of their own,
    the block moves x five times (counted here with module hooks); the rest as fused."""
    restormer, blur, prior = meta_restormer(tiny_config())
    passes = []
    for module in restormer.modules():
        if isinstance(module, TransformerBlock) and not module.attn.modulated:
            module.register_forward_pre_hook(lambda _, args: passes.append(5 * nbytes(args[0])))
    with torch.no_grad():
        restormer(blur, prior)
    work = traffic.frame_work(tiny_config(), SIZE)
    whole = work["whole-block kernels"]
    assert whole.calls == len(passes) > 0 and whole.bytes_blocks == sum(passes) and whole.bytes_fused == 0
    for kind in ("GDFN depthwise 3x3 + gate", "attention depthwise 3x3", "MDTA products (Gram, mixing)"):
        assert work[kind].bytes_blocks < work[kind].bytes_fused  # the modulated bottleneck's blocks remain
    for kind in ("HIM cross-attention", "dense convolutions (embed, output, resampling)"):
        assert work[kind].bytes_blocks == work[kind].bytes_fused
    assert sum(w.bytes_blocks for w in work.values()) < sum(w.bytes_fused for w in work.values())


def test_cli_writes_table_and_json(tmp_path, capsys):
    assert traffic.main(["--preset", "gopro", "--size", "128x64", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "traffic.md").read_text()
    assert "| **frame** |" in table and table in capsys.readouterr().out
    record = json.loads((tmp_path / "traffic.json").read_text())
    assert record["bandwidth"] == traffic.H100_BANDWIDTH
    assert set(record["work"]) == set(traffic.KINDS)
    # The 4.6 TFLOP this count gives at 1280x720 (padded channels included) scale with the pixels:
    # 128x64 has 1/112.5 of them
    total = sum(w["flops"] for w in record["work"].values())
    assert 3.0e12 / 112.5 < total < 6.0e12 / 112.5


def test_cli_refuses_a_nonpositive_bandwidth():
    with pytest.raises(SystemExit):
        traffic.main(["--bandwidth", "0"])
