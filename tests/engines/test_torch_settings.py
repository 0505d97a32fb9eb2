"""engines.torch_settings: the presets, the checks at construction and against a device and
precision, and the default form per device and precision."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from engines.torch_settings import PRESETS, TorchSettings, default_settings, kernels_unavailable

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def test_presets_say_what_they_turn_on():
    eager, channels_last, compiled, fastest = (PRESETS[n] for n in ("eager", "channels-last", "compiled", "fastest"))
    assert eager == TorchSettings()
    assert channels_last == TorchSettings(channels_last=True, pad_channels=True)
    assert compiled == dataclasses.replace(channels_last, compile_mode="default")
    assert fastest.kernels == ("fuse_gdfn_gate", "fuse_block_norms", "fuse_prior_attention")
    assert fastest.cuda_graphs and fastest.compile_mode == "default" and fastest.channels_last
    assert TorchSettings.preset("fastest") is fastest
    with pytest.raises(ValueError, match=r"PyTorch preset 'turbo': expected one of \['eager', 'channels-last', "):
        TorchSettings.preset("turbo")


def test_settings_are_frozen_hashable_and_describe_themselves():
    fastest = TorchSettings.preset("fastest")
    with pytest.raises(dataclasses.FrozenInstanceError):
        fastest.cuda_graphs = False  # type: ignore[misc]
    assert len({fastest, TorchSettings.preset("fastest"), TorchSettings()}) == 2
    assert fastest.describe() == "fastest"
    custom = fastest.replace(cuda_graphs=False)
    assert custom.describe().startswith("TorchSettings(compile_mode='default', channels_last=True")
    assert "cuda_graphs" not in custom.describe()


def test_inductor_options_are_normalised_pairs():
    as_dict = TorchSettings(compile_mode="default", inductor_options={"b": 1, "a": True})  # type: ignore[arg-type]
    as_pairs = TorchSettings(compile_mode="default", inductor_options=(("a", True), ("b", 1)))
    assert as_dict == as_pairs and as_pairs.inductor_options == (("a", True), ("b", 1))
    hash(as_pairs)


@pytest.mark.parametrize("fields, words", [
    ({"compile_mode": "reduce-overhead"}, "compile_mode 'reduce-overhead': expected None (eager) or one of"),
    ({"inductor_options": (("conv_1x1_as_mm", True),)}, "without a compile_mode would be ignored"),
    ({"fuse_block_norms": True}, "fuse_block_norms run(s) Triton kernels on channels-last tensors"),
    ({"fuse_prior_attention": True}, "pass channels_last=True"),
    ({"inductor_options": ("not pairs",)}, "expected (name, value) pairs"),
])
def test_combinations_that_never_work_are_refused_at_construction(fields, words):
    with pytest.raises(ValueError) as info:
        TorchSettings(**fields)
    assert words in str(info.value)


def test_check_names_what_the_device_and_precision_cannot_run():
    TorchSettings.preset("eager").check(CPU, "fp32")
    TorchSettings.preset("compiled").check(CPU, "fp32")  # inductor compiles for the CPU too
    with pytest.raises(ValueError) as info:
        TorchSettings.preset("fastest").check(CPU, "fp32")
    message = str(info.value)
    assert message.startswith("PyTorch settings fastest: ")
    assert "fuse_gdfn_gate, fuse_block_norms, fuse_prior_attention, cuda_graphs need(s) a CUDA device, got cpu" in message
    assert "run(s) float16 kernels, precision fp32 was asked for" in message
    assert "Pick another preset (eager, channels-last, compiled, fastest)" in message
    # Without a device, only the precision is checked (the command line knows no device yet).
    with pytest.raises(ValueError, match="precision fp32 was asked for"):
        TorchSettings.preset("fastest").check(precision="fp32")
    TorchSettings.preset("fastest").check(precision="fp16")


def test_default_settings_per_device_and_precision():
    assert default_settings(CPU, "fp32") == TorchSettings()
    assert default_settings(CUDA, "fp32") == TorchSettings(channels_last=True)
    expected = TorchSettings.preset("fastest" if kernels_unavailable(CUDA) is None else "channels-last")
    assert default_settings(CUDA, "fp16") == expected


def test_kernels_need_cuda():
    assert kernels_unavailable(CPU) == "device cpu is not a CUDA device"
