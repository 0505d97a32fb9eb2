"""Shared fixtures: tiny HI-Diff configurations that run in milliseconds on a CPU."""
from __future__ import annotations

import pytest
import torch

from hidiff.config import DenoiserConfig, EncoderConfig, HIDiffConfig, RestormerConfig


def tiny_config(**schedule) -> HIDiffConfig:
    from hidiff.config import ScheduleConfig

    return HIDiffConfig(
        network_g=RestormerConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2), embed_dim=8),
        network_le=EncoderConfig(in_chans=6, embed_dim=8, block_num=1),
        network_le_dm=EncoderConfig(embed_dim=8, block_num=1),
        network_d=DenoiserConfig(in_channel=32, out_channel=32, inner_channel=32, block_num=3),
        diffusion_schedule=ScheduleConfig(**schedule),
    )


@pytest.fixture
def tiny_model():
    from hidiff.model import HIDiff

    torch.manual_seed(0)
    return HIDiff(tiny_config()).eval()


# The session fixtures that build for minutes on 2 cores: the embedded model's CPU packages
# (tests/export/test_aoti_package.py) and the export tests' shared ONNX exports (``runs``,
# tests/export/export_runs.py). The tests that use them share one pytest-xdist group, so that with
# ``-n 2 --dist loadgroup`` one worker builds each once while the other runs the rest of the suite.
SHARED_BUILDS = ("embedded_cpu_packages", "runs")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    # GPU tests skip only when no GPU is present; on the lent H100 they run.
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none is present")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
        if any(name in getattr(item, "fixturenames", ()) for name in SHARED_BUILDS):
            item.add_marker(pytest.mark.xdist_group("shared_builds"))


@pytest.fixture(autouse=True)
def _one_thread():
    # One intra-op thread: OpenMP threads competing with other processes on a small (2-core) CPU
    # make tiny models many times slower, and results then depend on no thread count.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
