"""The kernels' packaged forms (``hidiff::NAME_packaged``, torch.library.triton_op): torch.export
takes them, with static and with dynamic height and width, and traces their launches on a CPU
(the compilation into a package needs a GPU: tests/export/test_aoti_kernels.py); calls outside an
export keep the opaque custom ops that torch.compile sees."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch.export import Dim

from engines.kernels.support import kernel_op, packaged_forms

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")


def _half(*shape: int, channels_last: bool = False) -> torch.Tensor:
    t = torch.randn(*shape, dtype=torch.float16)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


C, HIDDEN, TOKENS = 48, 128, 16  # level 1 of the GoPro Restormer (tl.dot needs sides of 16 or more on a GPU)
# name: (the op's arguments after the feature map, the feature map's channels)
CASES = {
    "gated_dwconv3x3": (lambda: (_half(2 * HIDDEN, 1, 3, 3), _half(2 * HIDDEN)), 2 * HIDDEN),
    "norm_conv1x1": (lambda: (_half(C, 3 * C), _half(3 * C), 1e-5, False), C),
    "conv1x1_residual": (lambda: (_half(C, HIDDEN), None), HIDDEN),
    "prior_attention": (lambda: (_half(1, C, 2 * TOKENS), _half(1, 2 * TOKENS).float(), _half(1, 2 * TOKENS, C),
                                 None, TOKENS, 1e-5, False), C),
    "head_gram_partials": (lambda: (2,), 2 * C),
    "gdfn_block": (lambda: (_half(C, 2 * HIDDEN), _half(2 * HIDDEN), _half(9, 2 * HIDDEN), None, _half(HIDDEN, C),
                            None, 1e-5, False), C),
    "mdta_gram_partials": (lambda: (_half(C, 3 * C), _half(3 * C), _half(9, 3 * C), None, 1, 1e-5, False), C),
    "mdta_apply": (lambda: (_half(C, 3 * C), _half(3 * C), _half(9, 3 * C), _half(3 * C), _half(1, C, C) * 0.1,
                            _half(C), 1e-5, False), C),
}


class OneOp(torch.nn.Module):
    def __init__(self, name: str, args: tuple):
        super().__init__()
        self.name = name
        self.args = args

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = kernel_op(self.name)
        if self.name == "conv1x1_residual":
            return op(x, self.args[0], self.args[1], x[:, :C].contiguous(memory_format=torch.channels_last))
        if self.name == "head_gram_partials":  # with the sum over the split that follows it in MDTA
            from engines.kernels.head_gram import head_gram_partials_to_cosine

            return head_gram_partials_to_cosine(op(x.flatten(2), *self.args))
        return op(x, *self.args)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_an_export_traces_the_packaged_op(name, dynamic):
    from engines.aoti_backend import KERNEL_MODULES  # the modules that register the ops

    for module in KERNEL_MODULES:
        importlib.import_module(module)
    make_args, channels = CASES[name]
    x = _half(1, channels, 16, 24, channels_last=True)
    shapes = ({2: 8 * Dim("h8", min=1, max=1024), 3: 8 * Dim("w8", min=1, max=1024)},) if dynamic else None
    program = torch.export.export(OneOp(name, make_args()), (x,), dynamic_shapes=shapes, strict=False)
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert f"hidiff.{name}_packaged.default" in targets and f"hidiff.{name}.default" not in targets, targets


def test_outside_an_export_the_ops_stay_opaque():
    """Eager calls and torch.compile's trace (without a graph break) take the custom op; the
    compiled graph is not run here (the kernels need a GPU)."""
    importlib.import_module("engines.kernels.gated_dwconv")
    assert kernel_op("gated_dwconv3x3") is torch.ops.hidiff.gated_dwconv3x3
    with packaged_forms():
        assert kernel_op("gated_dwconv3x3") is torch.ops.hidiff.gated_dwconv3x3_packaged
    assert kernel_op("gated_dwconv3x3") is torch.ops.hidiff.gated_dwconv3x3
    graphs = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return lambda *args: (torch.zeros(1, HIDDEN, 16, 24, dtype=torch.float16),)

    def gate(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return kernel_op("gated_dwconv3x3")(y, weight, bias) * 2

    torch.compile(gate, backend=backend, fullgraph=True)(_half(1, 2 * HIDDEN, 16, 24, channels_last=True),
                                                          *CASES["gated_dwconv3x3"][0]())
    targets = [str(node.target) for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert "hidiff.gated_dwconv3x3" in targets and not any("packaged" in t for t in targets), targets


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CASES))
def test_on_a_gpu_the_packaged_op_computes_what_the_opaque_op_does(name):
    """Called eagerly, each triton_op launches its kernel as the custom op does, at a size that
    splits into several tiles with partial ones at the edges (the norm kernel's packaged form is the
    pointer kernel, the opaque one the TMA kernel on Hopper: one FP16 rounding apart)."""
    from engines.aoti_backend import KERNEL_MODULES

    for module in KERNEL_MODULES:
        importlib.import_module(module)
    torch.manual_seed(0)
    make_args, channels = CASES[name]
    args = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in make_args())
    x = _half(1, channels, 136, 200, channels_last=True).cuda()
    want = OneOp(name, args)(x)
    with packaged_forms():
        got = OneOp(name, args)(x)
    torch.cuda.synchronize()
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-3, atol=2e-3)
