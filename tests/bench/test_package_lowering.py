"""bench/package_lowering.py: inductor's lowering of the fused Restormer graph with the kernels'
packaged forms costs no more than with their opaque ops, and the comparison does catch a kernel
output that inductor copies into the layout its kernel writes.

Triton's mutation analysis compiles each kernel for an sm_90 target; with no GPU driver here,
bench.package_lowering.sm90_target points Triton at a stand-in that only names that target (the
GPU driver is an external system this machine lacks). Nothing of the project is replaced."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from conftest import tiny_config

from bench import package_lowering
from bench.inputs import ImageSize
from engines.kernels.support import empty_channels_last

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")


def test_the_packaged_forms_cost_inductor_what_the_opaque_ops_cost():
    graph, args = package_lowering.restormer_graph(tiny_config(), ImageSize.parse("48x32"))
    packaged = package_lowering.lower(graph, args, "packaged")
    opaque = package_lowering.lower(graph, args, "opaque")
    assert packaged.triton_launches > 0 and opaque.triton_launches == 0
    # Every launch compiled in replaces one opaque call; inductor's own kernels are the same.
    assert opaque.external_calls - packaged.external_calls == packaged.triton_launches
    assert (packaged.generated_kernels, packaged.generated_bytes) == (opaque.generated_kernels, opaque.generated_bytes)
    assert packaged.generated_kernels > 0


# A kernel of the test's own (a copy), in a triton_op whose output is allocated one way or the other.
if importlib.util.find_spec("triton") is not None:
    import triton
    import triton.language as tl

    @triton.jit
    def _copy_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(y_ptr + offsets, tl.load(x_ptr + offsets, mask=offsets < n), mask=offsets < n)

    def _launch(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        torch.library.wrap_triton(_copy_kernel)[(triton.cdiv(x.numel(), 64),)](x, out, x.numel(), BLOCK=64)
        return out

    @torch.library.triton_op("hidiff_test::copy_memory_format", mutates_args=())
    def _copy_memory_format(x: torch.Tensor) -> torch.Tensor:
        return _launch(x, torch.empty(x.shape, device=x.device, dtype=x.dtype, memory_format=torch.channels_last))

    @torch.library.triton_op("hidiff_test::copy_strided", mutates_args=())
    def _copy_strided(x: torch.Tensor) -> torch.Tensor:
        return _launch(x, empty_channels_last(x))


class _AroundOneOp(torch.nn.Module):
    def __init__(self, op: str):
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(torch.ops.hidiff_test, self.op)(x * 2) * 3


def test_an_output_allocated_by_memory_format_costs_inductor_a_copy():
    """What the comparison above guards against: inductor lowers torch.empty(memory_format=channels_last)
    to a contiguous buffer, then copies it into the channels-last order the kernel's strides need."""
    x = torch.randn(1, 16, 4, 6, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    by_format = package_lowering.lower(_AroundOneOp("copy_memory_format"), (x,), "packaged")
    strided = package_lowering.lower(_AroundOneOp("copy_strided"), (x,), "packaged")
    assert by_format.triton_launches == strided.triton_launches == 1
    assert strided.generated_kernels == 2  # x * 2 and * 3
    assert by_format.generated_kernels == 3 and by_format.generated_bytes == strided.generated_bytes + x.numel() * 2


def test_the_command_line_writes_its_table_and_json(tmp_path, capsys):
    assert package_lowering.main(["--tiny", "--size", "48x32", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "package_lowering.json").read_text())
    assert [f["form"] for f in record["forms"]] == ["packaged", "opaque"]
    assert "| packaged |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        package_lowering.main(["--size", "50x32"])
