"""bench/block_code.py on the CPU: reading the launches out of inductor's output code (the code itself needs a GPU)."""
from __future__ import annotations

from bench.block_code import launches

GENERATED = '''
def call(args):
    arg0_1, arg1_1 = args
    buf0 = empty_strided_cuda((1, 96, 8, 8), (6144, 1, 768, 96), torch.float16)
    triton_poi_fused_add_0.run(arg0_1, buf0, 6144, stream=stream0)
    extern_kernels.bmm(buf0, buf1, out=buf2)
    buf3 = torch.ops.aten.convolution.default(buf2, arg1_1, None)
    norm_matmul_kernel_0.run(buf3, arg1_1, grid=grid(10), stream=stream0)
    triton_poi_fused_5.run(buf2, buf4, 10, stream=stream0)
    del buf0
'''


def test_launches_in_order_of_every_kind():
    assert launches(GENERATED) == ["triton_poi_fused_add_0", "extern_kernels.bmm", "torch.ops.aten.convolution",
                                   "norm_matmul_kernel_0", "triton_poi_fused_5"]
