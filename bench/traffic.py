"""The memory and arithmetic floor of one Restormer frame, kind of work by kind of work (issue 8).

    python bench/traffic.py --preset gopro --size 1280x720 [--bandwidth 3.35e12] [--flops 989e12] [--out DIR]

The FP16 channels-last Restormer with padded channels (what the CUDA engines run) goes through one
forward pass on PyTorch's ``meta`` device: shapes only, no GPU and no memory, a few seconds on any
machine. Every ATen operation is recorded with its tensors' sizes and the Restormer module that
issued it, and sorted into a kind of work (1x1 convolutions, GDFN's depthwise convolution and
gate, the attention's depthwise convolutions, MDTA's products, ...). For each kind:

- **bytes, op by op**: every operation reads its tensor inputs and writes its outputs once: about
  what eager PyTorch moves (views move nothing);
- **bytes, fused**: only the convolutions, matrix products and attention touch memory, each once;
  LayerNorms, activations, residual additions and casts ride along inside them for free, and
  GDFN's gate inside its depthwise convolution (read 2 x hidden channels, write hidden): the least
  this formulation can move, whatever the kernels;
- **bytes, whole blocks**: as fused, but every Transformer block without the prior's modulation
  runs its feed-forward half as one kernel (x read once, written once: the hidden tensor never
  reaches memory) and its attention in two passes (pass 1 reads x and accumulates q k^T without
  writing q or k; pass 2 reads x again, recomputes v and writes x): five passes over x a block,
  its weights aside. The row "whole-block kernels" holds those passes;
- **FLOPs** of the convolutions, products and attention (2 per multiply-add);
- **floor ms**: the larger of fused bytes / ``--bandwidth`` and FLOPs / ``--flops`` (defaults: an
  H100 SXM's 3.35 TB/s of HBM3 and 989 TFLOP/s of dense FP16 tensor-core work); **blocks floor
  ms** the same with the whole-block bytes (the halo's recomputed pixels not counted).

Peak figures are datasheet figures; real kernels reach perhaps 80-90 % of the bandwidth. The
floor says how far a frame is from the hardware and which work is worth a kernel of its own. One
overcount: on the meta device HIM's attention runs in its math form (two products around a
softmax), so its row counts the attention scores written and read back, which a fused attention
kernel keeps on chip (a few hundredths of the frame's bytes).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bench.inputs import ImageSize, engine_restormer
from hidiff.config import HIDiffConfig, preset
from hidiff.files import write_atomic

H100_BANDWIDTH = 3.35e12  # bytes/s, HBM3 of the H100 SXM
H100_FP16_FLOPS = 989e12  # dense FP16 tensor-core FLOP/s of the H100 SXM

# Operations that only reinterpret memory (no kernel, no traffic).
VIEWS = {"view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "as_strided", "alias", "detach",
         "slice", "select", "split", "split_with_sizes", "chunk", "unsqueeze", "squeeze", "diagonal", "unbind",
         "lift_fresh", "empty", "empty_strided", "empty_like"}
# Operations that read and write memory in any formulation: kernels of their own.
ANCHORS = {"convolution", "bmm", "mm", "addmm", "_scaled_dot_product_flash_attention",
           "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
           "_scaled_dot_product_flash_attention_for_cpu", "scaled_dot_product_attention", "_efficient_attention_forward"}
KINDS = ("1x1 convolutions (GEMMs)", "GDFN depthwise 3x3 + gate", "attention depthwise 3x3", "MDTA products (Gram, mixing)",
         "HIM cross-attention", "dense convolutions (embed, output, resampling)", "prior projections and modulation",
         "norms, activations, residuals", "whole-block kernels")
WHOLE_BLOCK_PASSES = 5  # over x per unmodulated block: GDFN reads and writes it, MDTA reads it twice and writes it
UNMODULATED_BLOCK = "TransformerBlock"  # the owner label of a block without the prior's modulation


@dataclass
class Work:
    """What one kind of work reads, writes and computes in a frame."""

    calls: int = 0
    bytes_per_op: int = 0
    bytes_fused: int = 0
    bytes_blocks: int = 0
    flops: int = 0
    ops: dict[str, int] = field(default_factory=dict)

    def floor_ms(self, bandwidth: float, flops: float, whole_blocks: bool = False) -> float:
        moved = self.bytes_blocks if whole_blocks else self.bytes_fused
        return 1e3 * max(moved / bandwidth, self.flops / flops)


def _nbytes(value: Any) -> int:
    return value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0


def _distinct_tensors(values: Sequence[Any]) -> list[torch.Tensor]:
    """The tensors among ``values``, each memory region once: the Gram product q k^T of [q; k]
    passes one tensor and its transpose, which a kernel need read only once."""
    seen: dict[tuple, torch.Tensor] = {}
    for value in values:
        if isinstance(value, torch.Tensor):
            base = value._base if value._base is not None else value
            seen.setdefault((id(base), value.storage_offset(), tuple(sorted(value.shape))), value)
    return list(seen.values())


def _flops(name: str, args: Sequence[Any], out: Any) -> int:
    """2 x multiply-adds of a convolution, matrix product or attention; 0 for anything else."""
    if name == "convolution":
        weight = args[1]
        return 2 * out.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]
    if name in ("mm", "bmm", "addmm"):
        a = args[1] if name == "addmm" else args[0]
        return 2 * out.numel() * a.shape[-1]
    if "attention" in name:
        q, k = args[0], args[1]  # (B, heads, Lq, d), (B, heads, Lk, d): q k^T and attn v
        return 4 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]
    return 0


class Ledger(TorchDispatchMode):
    """Records every ATen operation of a forward pass against the module running it."""

    def __init__(self, owners: list[str]):
        super().__init__()
        self.owners = owners  # the class names of the modules entered, outermost first
        self.work: dict[str, Work] = defaultdict(Work)

    def kind(self, name: str, args: Sequence[Any]) -> str:
        inside = set(self.owners)
        if name == "convolution":
            weight = args[1]
            if weight.shape[2:] == (1, 1):
                return KINDS[0]
            if weight.shape[1] == 1 and weight.shape[0] == args[0].shape[1]:  # depthwise
                return KINDS[1] if inside & {"GDFN", "FusedGateGDFN"} else KINDS[2]
            return KINDS[5]
        if "HIM" in inside:
            return KINDS[4]
        if name == "bmm" and "MDTA" in inside:
            return KINDS[3]
        if name in ANCHORS:
            return KINDS[6]  # the Linears of the multi-scale prior and of the bottleneck's modulation
        if inside & {"GDFN", "FusedGateGDFN"} and name in ("gelu", "mul") and "Linear" not in inside:
            return KINDS[1]  # the gate: fused into the depthwise convolution
        return KINDS[7]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in VIEWS:
            return out
        kind = self.kind(name, args)
        work = self.work[kind]
        read = sum(_nbytes(a) for a in _distinct_tensors(tree_leaves((args, kwargs or {}))))
        written = sum(_nbytes(o) for o in tree_leaves(out))
        work.calls += 1
        work.ops[name] = work.ops.get(name, 0) + 1
        work.bytes_per_op += read + written
        if name in ANCHORS:
            gated = name == "convolution" and kind == KINDS[1]  # the gate halves what is written
            fused = read + (written // 2 if gated else written)
            work.bytes_fused += fused
            inside = set(self.owners)
            if not (UNMODULATED_BLOCK in inside and inside & {"GDFN", "FusedGateGDFN", "MDTA"}):
                work.bytes_blocks += fused  # inside a whole-block kernel it stays on chip
            work.flops += _flops(name, args, out)
        return out

    def whole_block(self, x: torch.Tensor) -> None:
        """The passes over ``x`` of an unmodulated block's whole-block kernels."""
        work = self.work[KINDS[8]]
        work.calls += 1
        work.bytes_blocks += WHOLE_BLOCK_PASSES * _nbytes(x)


def frame_work(config: HIDiffConfig, size: ImageSize) -> dict[str, Work]:
    """The kinds of work of one frame of ``config``'s Restormer at ``size`` (padded to the
    Restormer's multiple), in float16, channels-last, with padded channels, on the meta device."""
    restormer, blur, prior = engine_restormer(config, size, "meta", torch.float16)
    owners: list[str] = []
    ledger = Ledger(owners)

    def enter(module: torch.nn.Module, args: Any) -> None:
        label = type(module).__name__
        if label == UNMODULATED_BLOCK:
            if getattr(module, "attn").modulated:
                label = "ModulatedBlock"
            else:
                ledger.whole_block(args[0])
        owners.append(label)

    def leave(module: torch.nn.Module, _: Any, __: Any) -> None:
        owners.pop()

    for module in restormer.modules():
        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave)
    with torch.no_grad(), ledger:  # not inference_mode: composite ops would reach the ledger undecomposed
        restormer(blur, prior)
    return {kind: ledger.work[kind] for kind in KINDS if kind in ledger.work}


def markdown(work: dict[str, Work], title: str, bandwidth: float, flops: float) -> str:
    lines = [f"## {title}", "",
             f"Floors at {bandwidth / 1e12:.2f} TB/s and {flops / 1e12:.0f} TFLOP/s.", "",
             "| kind of work | ops | GB op by op | GB fused | GB whole blocks | GFLOP | ms at bandwidth | ms at FLOP/s "
             "| floor ms | blocks floor ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind, w in work.items():
        lines.append(f"| {kind} | {w.calls} | {w.bytes_per_op / 1e9:.2f} | {w.bytes_fused / 1e9:.2f} | "
                     f"{w.bytes_blocks / 1e9:.2f} | {w.flops / 1e9:.0f} | {1e3 * w.bytes_fused / bandwidth:.2f} | "
                     f"{1e3 * w.flops / flops:.2f} | {w.floor_ms(bandwidth, flops):.2f} | "
                     f"{w.floor_ms(bandwidth, flops, whole_blocks=True):.2f} |")
    per_op = sum(w.bytes_per_op for w in work.values())
    fused = sum(w.bytes_fused for w in work.values())
    blocks = sum(w.bytes_blocks for w in work.values())
    total_flops = sum(w.flops for w in work.values())
    floor = sum(w.floor_ms(bandwidth, flops) for w in work.values())
    blocks_floor = sum(w.floor_ms(bandwidth, flops, whole_blocks=True) for w in work.values())
    lines.append(f"| **frame** | {sum(w.calls for w in work.values())} | **{per_op / 1e9:.2f}** | **{fused / 1e9:.2f}** | "
                 f"**{blocks / 1e9:.2f}** | **{total_flops / 1e9:.0f}** | {1e3 * fused / bandwidth:.2f} | "
                 f"{1e3 * total_flops / flops:.2f} | **{floor:.2f}** | **{blocks_floor:.2f}** |")
    lines += ["", f"Op by op, the frame would take {1e3 * per_op / bandwidth:.1f} ms at the full bandwidth."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/traffic.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gopro", help="architecture preset (hidiff.config.preset): gopro, realblur_j, ...")
    parser.add_argument("--size", type=ImageSize.parse, default=ImageSize.parse("1280x720"), help="WIDTHxHEIGHT")
    parser.add_argument("--bandwidth", type=float, default=H100_BANDWIDTH, help="memory bandwidth, bytes/s")
    parser.add_argument("--flops", type=float, default=H100_FP16_FLOPS, help="FP16 tensor-core FLOP/s")
    parser.add_argument("--out", type=Path, help="folder for traffic.json and traffic.md")
    args = parser.parse_args(argv)
    if args.bandwidth <= 0 or args.flops <= 0:
        parser.error("--bandwidth and --flops must be positive")
    work = frame_work(preset(args.preset), args.size)
    title = f"Memory and arithmetic floor of one {args.size.label} Restormer frame, {args.preset} preset, FP16 channels-last"
    table = markdown(work, title, args.bandwidth, args.flops)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"title": title, "bandwidth": args.bandwidth, "flops": args.flops,
                  "work": {kind: asdict(w) for kind, w in work.items()}}
        write_atomic(args.out / "traffic.json", json.dumps(record, indent=1).encode("utf-8"))
        write_atomic(args.out / "traffic.md", table.encode("utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
