"""What inductor makes of the fused Restormer graph with the kernels' packaged forms (the
``triton_op`` forms the AOTInductor packages compile in) against their opaque ops (what the
just-in-time form calls), on a CPU: the graph is traced as for a CUDA GPU and lowered to
inductor's IR, not compiled, so no GPU is needed.

    python bench/package_lowering.py --preset gopro --size 1280x720 [--out DIR]

Per form: the kernels inductor generates around the Triton kernels (pointwise and reductions) and
the bytes they write per frame, the external calls (convolutions, products, the opaque ops) and the
Triton launches. The two forms should cost inductor the same: a packaged form that makes inductor
copy a tensor into the layout its kernel writes (an extra pass over memory on every frame) shows up
here as more kernels and more bytes. Triton's analysis of what a kernel mutates compiles its
source for an sm_90 target (``triton.runtime.driver`` is pointed at a stand-in that names the
target: no GPU driver is present); the buffers' sizes are the frame's, the lowering uses fake
tensors. Uses inductor's internal passes (torch 2.11 to 2.13).
"""
from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from bench.inputs import ImageSize, tiny_config
from hidiff.config import HIDiffConfig, preset
from hidiff.files import write_atomic

FORMS = ("packaged", "opaque")


@dataclass(frozen=True)
class Lowering:
    """Inductor's work in one form of the graph."""

    form: str
    generated_kernels: int  # pointwise and reduction kernels inductor writes
    generated_bytes: int  # what they write, once each
    external_calls: int  # convolutions, products and (opaque form) the project's ops
    triton_launches: int  # (packaged form) the kernels' launches compiled in


class _SM90Target:
    """Stands in for Triton's CUDA driver where no GPU is present: names an sm_90 target, which is
    all Triton's mutation analysis asks of it."""

    def get_current_target(self) -> object:
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", 90, 32)

    def get_current_device(self) -> int:
        return 0


@contextlib.contextmanager
def sm90_target() -> Iterator[None]:
    """Triton's active driver is :class:`_SM90Target` inside this block (the real one where a GPU is present)."""
    import triton

    config = triton.runtime.driver
    if torch.cuda.is_available():
        yield
        return
    before = config._active
    config.set_active(_SM90Target())
    try:
        yield
    finally:
        config._active = before


class _Outputs(nn.Module):
    """The graph with its output in a tuple (AOTAutograd's export takes tuples)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.inner = module  # not "graph": the exported GraphModule has a graph of its own

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.inner(*args),)


def lower(module: nn.Module, args: Sequence[torch.Tensor], form: str) -> Lowering:
    """Export ``module`` on ``args`` with the kernels' ``form`` ("packaged" or "opaque"), run
    AOTAutograd, inductor's decompositions and post-grad passes, and lower it to inductor's IR."""
    from torch._functorch.aot_autograd import aot_export_module
    from torch._inductor import ir
    from torch._inductor.decomposition import select_decomp_table
    from torch._inductor.fx_passes.post_grad import post_grad_passes
    from torch._inductor.graph import GraphLowering
    from torch._inductor.virtualized import V
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    from engines.kernels.support import packaged_forms, traced_on_any_device

    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    wrapped = _Outputs(module)
    with torch.no_grad(), traced_on_any_device(), packaged_forms(form == "packaged"), sm90_target():
        program = torch.export.export(wrapped, tuple(args), strict=False)
        exported = program.module()
        graph, signature = aot_export_module(exported, tuple(args), trace_joint=False,
                                             decompositions=select_decomp_table())
        held = {**dict(exported.named_parameters(remove_duplicate=False)),
                **dict(exported.named_buffers(remove_duplicate=False))}
        inputs = [held[name] for name in (*signature.parameters, *signature.buffers)] + list(args)
        mode = FakeTensorMode()
        fake = [mode.from_tensor(t) for t in inputs]
        with V.set_fake_mode(mode):
            FakeTensorProp(graph, mode).propagate(*fake)
            post_grad_passes(graph, is_inference=True)
            lowering = GraphLowering(graph, example_inputs=fake, is_inference=True)
            with V.set_graph_handler(lowering):
                lowering.run(*fake)
    kernels = written = external = launches = 0
    for operation in lowering.operations:
        if isinstance(operation, ir.ComputedBuffer):
            ranges = getattr(operation.data, "ranges", ())
            if ranges and all(int(r) == 0 for r in ranges):
                continue  # an allocation (an output a Triton kernel writes), no kernel
            kernels += 1
            written += int(operation.get_layout().storage_size()) * operation.get_dtype().itemsize
        elif isinstance(operation, ir.UserDefinedTritonKernel):
            launches += 1
        elif isinstance(operation, ir.ExternKernel) and not isinstance(operation, ir.MultiOutput):
            external += 1
    return Lowering(form, kernels, written, external, launches)


def restormer_graph(config: HIDiffConfig, size: ImageSize, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The Restormer graph as the CUDA FP16 engines build it (channels-last, padded channels, every
    fused kernel), on the CPU in float16 with random weights, and a frame's inputs."""
    from engines.torch_backend import prepare_model
    from engines.torch_settings import TorchSettings
    from hidiff import HIDiff
    from hidiff.graphs import graph_modules

    torch.manual_seed(seed)
    settings = TorchSettings(channels_last=True, pad_channels=True, fuse_gdfn_gate=True, fuse_block_norms=True,
                             fuse_prior_attention=True)
    model = prepare_model(HIDiff(config).eval(), torch.device("cpu"), torch.float16, settings)
    graph = graph_modules(model, torch.float16, channels_last=True)["restormer"]
    args = (torch.rand(1, 3, size.height, size.width), torch.randn(1, config.prior_tokens, config.prior_channels))
    return graph, args


def markdown(rows: Sequence[Lowering], title: str) -> str:
    lines = [f"## {title}", "", "| form | inductor's kernels | bytes they write | external calls | Triton launches |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r.form} | {r.generated_kernels} | {r.generated_bytes / 1e9:.3f} GB | {r.external_calls} | "
              f"{r.triton_launches} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/package_lowering.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gopro", help="architecture preset (hidiff.config.preset)")
    parser.add_argument("--tiny", action="store_true", help="the tiny CI architecture instead of --preset")
    parser.add_argument("--size", type=ImageSize.parse, default=ImageSize.parse("1280x720"), help="WIDTHxHEIGHT")
    parser.add_argument("--out", type=Path, help="folder for package_lowering.json and .md")
    args = parser.parse_args(argv)
    if args.size.height % 8 or args.size.width % 8:
        parser.error(f"--size {args.size.label}: the engines see sides padded to multiples of 8; pass such a size")
    name = "tiny" if args.tiny else args.preset
    graph, inputs = restormer_graph(tiny_config() if args.tiny else preset(args.preset), args.size)
    rows = [lower(graph, inputs, form) for form in FORMS]
    title = f"Inductor's work in the {args.size.label} Restormer graph, {name} architecture, FP16 channels-last, fused kernels"
    table = markdown(rows, title)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out / "package_lowering.json",
                     json.dumps({"title": title, "forms": [asdict(r) for r in rows]}, indent=1).encode("utf-8"))
        write_atomic(args.out / "package_lowering.md", table.encode("utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
