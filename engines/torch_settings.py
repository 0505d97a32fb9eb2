"""How the PyTorch backend runs the model: one frozen :class:`TorchSettings`, with named presets.

    TorchSettings.preset("fastest")   # CUDA, FP16: compiled, fused Triton kernels, CUDA graphs
    TorchSettings.preset("eager")     # the model as written: the CPU default, the benchmarks' baseline

A settings object is made once (by the caller, the command line, or :func:`default_settings` for
a device and precision), checked against the device and precision by :meth:`TorchSettings.check`
before the model is copied, and handed unchanged to :func:`engines.torch_backend.torch_engines`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from engines.contracts import Precision

# torch.compile modes the engines take. The other modes ("reduce-overhead", "max-autotune") add
# inductor's own CUDA graphs, whose outputs the next call overwrites behind the caller's back;
# ``cuda_graphs=True`` gives the same replay with the engines' rules (engines.cuda_graphs).
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")

# The fields that swap Triton kernels into the Restormer, and what each needs besides CUDA and Triton.
KERNEL_FIELDS = ("fuse_gdfn_gate", "fuse_block_norms", "fuse_prior_attention")
FP16_CHANNELS_LAST_FIELDS = ("fuse_block_norms", "fuse_prior_attention")


@dataclass(frozen=True)
class TorchSettings:
    """What the PyTorch engines do with the model, beyond device and precision.

    - ``compile_mode``: None runs eagerly; else the ``torch.compile`` mode of each graph module
      (:data:`COMPILE_MODES`). Each new input shape compiles on its first call (for minutes with
      the fused kernels' autotuning): it pays off on long videos of one size, not on single images.
    - ``inductor_options``: inductor settings added over the mode's
      (``torch._inductor.list_mode_options``), as ``(name, value)`` pairs, e.g.
      ``(("conv_1x1_as_mm", True),)``; needs ``compile_mode``.
    - ``channels_last``: the image graphs in channels-last memory (cuDNN's tensor-core
      convolutions take it natively; the LayerNorms over channels need no transposes).
    - ``pad_channels``: zero-pad the Restormer's channel counts to multiples of 8
      (:mod:`hidiff.aligned_channels`; same outputs) so that every float16 convolution gets a
      tensor-core kernel.
    - ``fuse_gdfn_gate``: each GDFN's depthwise 3x3 convolution and GELU gate as one Triton kernel.
    - ``fuse_block_norms``: every Transformer block without the prior runs its LayerNorms inside
      the 1x1 projections after them, its residual additions inside the projections before them,
      and MDTA's per-head q k^T cosines as one kernel (Triton; FP16, channels-last).
    - ``fuse_prior_attention``: each HIM (the cross-attention to the prior tokens, with its
      LayerNorm) as one Triton kernel (FP16, channels-last).
    - ``cuda_graphs``: each engine replays its work as one CUDA graph per input shape from the
      shape's second call on (:class:`engines.cuda_graphs.ShapeGraphs`); its outputs are then
      buffers that the next call of the same shape overwrites. (The denoising loop's graph is the
      caller's switch: ``Deblurrer(cuda_graphs=...)``.)

    The kernels and CUDA graphs need a CUDA device; :meth:`check` says what a device and
    precision cannot run. Construction refuses combinations that never work.
    """

    compile_mode: str | None = None
    inductor_options: tuple[tuple[str, Any], ...] = ()
    channels_last: bool = False
    pad_channels: bool = False
    fuse_gdfn_gate: bool = False
    fuse_block_norms: bool = False
    fuse_prior_attention: bool = False
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        options = self.inductor_options
        if isinstance(options, Mapping):
            options = tuple(options.items())
        try:
            pairs = tuple(sorted((str(k), v) for k, v in options))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"inductor_options {self.inductor_options!r}: expected (name, value) pairs such as "
                             "(('conv_1x1_as_mm', True),)") from exc
        object.__setattr__(self, "inductor_options", pairs)
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode {self.compile_mode!r}: expected None (eager) or one of {COMPILE_MODES}; "
                             "for CUDA graphs use cuda_graphs=True rather than inductor's own")
        if pairs and self.compile_mode is None:
            raise ValueError(f"inductor_options {dict(pairs)} without a compile_mode would be ignored; "
                             f"pass compile_mode='default' (or another of {COMPILE_MODES})")
        needs_layout = [name for name in FP16_CHANNELS_LAST_FIELDS if getattr(self, name)]
        if needs_layout and not self.channels_last:
            raise ValueError(f"{' and '.join(needs_layout)} run(s) Triton kernels on channels-last tensors: "
                             "pass channels_last=True as well")

    @classmethod
    def preset(cls, name: str) -> "TorchSettings":
        """One of :data:`PRESETS` by name."""
        if name not in PRESETS:
            raise ValueError(f"PyTorch preset {name!r}: expected one of {list(PRESETS)}")
        return PRESETS[name]

    def replace(self, **changes: Any) -> "TorchSettings":
        """A copy with ``changes`` (checked like a new object)."""
        return replace(self, **changes)

    @property
    def kernels(self) -> tuple[str, ...]:
        """The names of the kernel fields that are on."""
        return tuple(name for name in KERNEL_FIELDS if getattr(self, name))

    def check(self, device: torch.device | None = None, precision: Precision | str | None = None) -> None:
        """ValueError naming every field that ``device`` / ``precision`` cannot run (None: not checked)."""
        problems = []
        precision = Precision.parse(precision) if precision is not None else None
        on_cuda = device is None or device.type == "cuda"
        if not on_cuda:
            cuda_only = [*self.kernels, *(["cuda_graphs"] if self.cuda_graphs else [])]
            if cuda_only:
                problems.append(f"{', '.join(cuda_only)} need(s) a CUDA device, got {device}")
        elif self.kernels and device is not None:
            why = kernels_unavailable(device)
            if why is not None:
                problems.append(f"{', '.join(self.kernels)}: {why}")
        fp16_only = [name for name in FP16_CHANNELS_LAST_FIELDS if getattr(self, name)]
        if fp16_only and precision is not None and precision is not Precision.FP16:
            problems.append(f"{', '.join(fp16_only)} run(s) float16 kernels, precision {precision.value} was asked for")
        if problems:
            raise ValueError(f"PyTorch settings {self.describe()}: " + "; ".join(problems)
                             + f". Pick another preset ({', '.join(PRESETS)}) or turn those fields off")

    def describe(self) -> str:
        """The preset's name where these are a preset's settings, else the fields that differ from eager."""
        for name, settings in PRESETS.items():
            if settings == self:
                return name
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                   if getattr(self, f.name) != getattr(EAGER, f.name)]
        return "TorchSettings(" + ", ".join(changed) + ")"


EAGER = TorchSettings()
CHANNELS_LAST = TorchSettings(channels_last=True, pad_channels=True)
COMPILED = CHANNELS_LAST.replace(compile_mode="default")
FASTEST = COMPILED.replace(fuse_gdfn_gate=True, fuse_block_norms=True, fuse_prior_attention=True, cuda_graphs=True)

PRESETS: dict[str, TorchSettings] = {
    # The model as written, in the default memory layout: the CPU's form and the benchmarks' baseline.
    "eager": EAGER,
    # Eager, channels-last memory, channel counts padded for the tensor cores.
    "channels-last": CHANNELS_LAST,
    # The same, compiled by torch.compile (inductor's default mode).
    "compiled": COMPILED,
    # Compiled, with every fused Triton kernel and each engine replayed as CUDA graphs: CUDA and FP16 only.
    "fastest": FASTEST,
}


def default_settings(device: torch.device, precision: Precision | str) -> TorchSettings:
    """The form the PyTorch backend runs in when none is given: the fastest one on a CUDA device
    in FP16 (channels-last without the kernels where Triton is missing), channels-last memory with
    the channel counts as trained in FP32 on CUDA, the eager model on the CPU."""
    if device.type != "cuda":
        return EAGER
    if Precision.parse(precision) is Precision.FP16:
        return FASTEST if kernels_unavailable(device) is None else CHANNELS_LAST
    return TorchSettings(channels_last=True)


def kernels_unavailable(device: torch.device) -> str | None:
    """Why the fused Triton kernels cannot run on ``device`` in float16 channels-last (None: they can)."""
    from engines.kernels import unavailable_reason

    return unavailable_reason(device, torch.float16, True)
