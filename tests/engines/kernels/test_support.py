"""engines.kernels.support: why the kernels cannot run, when they do, block sizes, and the
autotuners' shared setup (configs from tile tuples, pruning of the tiles that do not fit a launch)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from engines.kernels import support, unavailable_reason

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")


def test_unavailable_reason_names_everything_missing():
    reason = unavailable_reason("cpu", torch.float32, channels_last=False)
    assert "device cpu is not a CUDA device" in reason
    assert "dtype torch.float32 is not float16 or bfloat16" in reason
    assert "the feature maps are not channels-last" in reason
    assert ("Triton is not installed" in reason) is (support.triton is None)
    assert unavailable_reason("cuda:0", torch.float16, channels_last=False) is not None


@needs_triton
def test_nothing_is_missing_for_half_channels_last_cuda():
    """A CUDA device string needs no GPU to be judged."""
    for dtype in (torch.float16, torch.bfloat16):
        assert unavailable_reason(torch.device("cuda", 0), dtype, channels_last=True) is None


def test_kernels_run_only_on_cuda_tensors_of_their_dtypes():
    """CPU tensors take the references; fake CUDA tensors (no GPU needed) take the kernels where
    Triton is installed."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    assert not support.kernel_runs(torch.zeros(2, dtype=torch.float16))
    assert not support.kernel_runs(torch.zeros(2), any_dtype=True)
    with FakeTensorMode():
        half, single = torch.empty(2, device="cuda", dtype=torch.float16), torch.empty(2, device="cuda")
        installed = support.triton is not None
        assert support.kernel_runs(half) is installed
        assert support.kernel_runs(half, single) is False
        assert support.kernel_runs(half, single, any_dtype=True) is installed


def test_block_sizes():
    assert [support.power_of_2(n) for n in (1, 2, 3, 16, 17, 96)] == [1, 2, 4, 16, 32, 128]
    assert [support.dot_block(n) for n in (1, 3, 16, 17, 48, 96, 192)] == [16, 16, 16, 32, 64, 128, 256]
    assert [support.cdiv(a, 4) for a in (0, 1, 4, 5)] == [0, 1, 1, 2]


def test_without_a_cuda_device_the_sm_count_is_the_fallback():
    assert support.sm_count(torch.device("cpu")) == support.FALLBACK_SMS
    assert not support.tma_available(torch.device("cpu"))


@needs_triton
def test_tile_configs_split_meta_parameters_from_launch_settings():
    hook = print
    first, second = support.tile_configs(("BLOCK_M", "num_warps", "BLOCK_N", "num_stages"),
                                         [(64, 4, 32, 2), (128, 8, 16, 3)], pre_hook=hook)
    assert first.kwargs == {"BLOCK_M": 64, "BLOCK_N": 32} and (first.num_warps, first.num_stages) == (4, 2)
    assert second.kwargs == {"BLOCK_M": 128, "BLOCK_N": 16} and second.pre_hook is hook
    with pytest.raises(ValueError):  # a tile of the wrong length
        support.tile_configs(("BLOCK_M", "num_warps"), [(64, 4, 2)])


@needs_triton
def test_autotune_prunes_the_tiles_that_do_not_fit_a_launch():
    """The prior-attention kernel's autotuner, at a launch of 256 channels: only the tiles whose rows
    fit the registers are timed (Triton calls the pruner with the launch's arguments)."""
    from engines.kernels import prior_attention

    kernel = prior_attention.prior_attention_kernel
    kept = kernel.early_config_prune(kernel.configs, {"HW": 100}, BLOCK_C=256)
    assert 0 < len(kept) < len(kernel.configs)
    assert all(prior_attention.fits_registers(c.kwargs["BLOCK_M"], 256, c.num_warps) for c in kept)
    assert len(kernel.early_config_prune(kernel.configs, {"BLOCK_C": 64})) == len(kernel.configs)


def test_launch_capability_off_a_gpu_is_the_h100s():
    """Where a launch's tensors are on no CUDA device (the interpreter, fake tensors on a CPU), the
    tile rules are those of the H100 the kernels are tuned on."""
    from engines.kernels.support import FALLBACK_CAPABILITY, launch_capability

    assert FALLBACK_CAPABILITY == 90
    assert launch_capability({"x_ptr": torch.zeros(2), "M": 4}) == 90
    if not torch.cuda.is_available():
        assert launch_capability({"M": 4}) == 90
