"""PyTorch backend: runs the modules of :mod:`hidiff.graphs` behind the engine interface.

This is the reference every other backend is compared with, and the fallback that needs nothing
but torch. :func:`torch_engines` copies a :class:`~hidiff.model.HIDiff` to the device and dtype
(the caller's model is left as it is) and wraps its three graph modules; each call runs under
``torch.inference_mode`` on the caller's CUDA stream, without a host synchronisation, so a
``torch.cuda.graph`` can capture it (the runtime's denoising loop does).

``compile``: ``False`` runs eagerly; ``True`` wraps each module in ``torch.compile`` with
``mode="max-autotune-no-cudagraphs"`` on CUDA (autotuned kernels, but no CUDA graphs of
inductor's own: those would tie outputs to static buffers that the next call overwrites, and the
runtime captures its own graph of the loop) and the default mode on the CPU; a string picks the
mode. Compilation happens on the first call of each new shape (dynamic shapes after the second),
so it pays off for long videos of one size, not for single images. ``inductor_options`` adds
inductor settings to the mode's (``torch._inductor.list_mode_options``), e.g.
``{"conv_1x1_as_mm": True}``. ``align_channels``
(default: on for float16 on CUDA) zero-pads the Restormer's unaligned channel counts so that every
convolution gets a tensor-core kernel (:mod:`hidiff.aligned_channels`). ``fuse_gates`` (default off;
CUDA and Triton only) runs each GDFN's depthwise convolution and GELU gate as one Triton kernel
(:mod:`engines.triton_gated_dwconv`): the fastest form, compiled or eager, and the leanest. On an
H100 the compiled FP16 GoPro model took 55.3 against 59.1 ms without it at 1280x720 and 114.1
against 127.1 ms at 1920x1080 (peak 4799 against 5844 MiB), the eager channels-last one 134.3
against 152.1 ms at 1280x720 (same runs; docs/benchmarks.md, session 9). It stays opt-in because
its first call of each new shape autotunes the kernel: 22.9 s against 0.45 s eagerly (Triton keeps
the choice on disk for later processes where it can; their start was not timed). (The attention's
depthwise convolutions as the same kernel without the gate ran slower than cuDNN's, 8.5 against
6.9 ms per 720p frame; written as nine shifted multiply-adds for inductor to fuse they ran slower
compiled, twice: 90.0 against 73.6 ms in session 3, 69.0 against 47.7 ms in session 6.)

``fuse_norms`` (default off; CUDA, Triton, FP16 and channels-last only) runs every Transformer block
that does not use the prior (all but the bottleneck's) with its LayerNorms folded into the 1x1
projections after them and its residual additions into the projections before them, two
Triton kernels (:mod:`engines.triton_norm_matmul`), and every HIM (the cross-attention to the
prior tokens, with its LayerNorm) as one kernel (:mod:`engines.triton_prior_attention`); combine it
with ``fuse_gates``. On an H100
(docs/benchmarks.md, session 10, one run each size), compiled with ``fuse_gates`` and
``cuda_graphs``: 45.6 against 49.8 ms at 1280x720, 99.2 against 107.8 ms at 1920x1080 (peak 3782
against 5012 MiB); with session 12's kernels (HIM and MDTA's per-head cosines added) 39.43 and
86.84 ms, peak 1826 and 3782 MiB.

``cuda_graphs`` (default off; CUDA only) replays each engine's work as one CUDA graph per input
shape from the shape's second call on (:class:`engines.cuda_graphs.ShapeGraphs`): no launch gaps
between the compiled Restormer's several hundred kernels, and no host work per kernel. Outputs
are then static buffers that the next call of the same shape overwrites, as TensorRT's are, and
each captured shape keeps its activations' memory for good (up to four shapes); a call made
while an outer capture records (the runtime's denoising loop) runs plainly into that capture.
Compiled with ``fuse_gates`` on an H100 it took 3.9 ms off a 1280x720 frame (53.7 -> 49.8 ms,
LE_DM 2.0 -> 0.6 ms) and the host's enqueue time from 28 to 1.5 ms (session 10).
"""
from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import nn

from engines.base import Engine, EngineError, caller_stream, parse_device
from engines.contracts import GraphContract, Precision, graph_contracts
from engines.cuda_graphs import ShapeGraphs

if TYPE_CHECKING:
    from hidiff.model import HIDiff

CUDA_COMPILE_MODE = "max-autotune-no-cudagraphs"
COMPUTE_DTYPES = {Precision.FP32: torch.float32, Precision.FP16: torch.float16}


class TorchEngine(Engine):
    """One graph module (float32 I/O, see :mod:`hidiff.graphs`) on ``device``.

    ``module`` must already live on ``device`` in its compute dtype; :func:`torch_engines` builds
    all three for a model. ``compile``: False, True (see the module docstring) or a
    ``torch.compile`` mode string.
    """

    backend = "torch"

    def __init__(self, module: nn.Module, contract: GraphContract, device: str | int | torch.device = "cpu",
                 compile: bool | str = False, inductor_options: dict[str, Any] | None = None,
                 cuda_graphs: bool = False):
        super().__init__(contract)
        self._device = parse_device(device)
        held = {p.device for p in module.parameters()} | {b.device for b in module.buffers()}
        stray = sorted(str(d) for d in held if d != self._device)
        if stray:
            raise ValueError(f"graph {contract.name!r}: the module has tensors on {stray}, the engine runs on "
                             f"{self._device}; move it with module.to({str(self._device)!r}) first")
        self.module: nn.Module | None = module.eval()
        self.compile_mode: str | None = None
        self._run: Callable[..., Any] | None = module
        if inductor_options and not compile:
            raise ValueError(f"graph {contract.name!r}: inductor_options {inductor_options} without compile=True "
                             "would be ignored; pass compile=True or a mode")
        if compile:
            self.compile_mode = compile if isinstance(compile, str) else (
                CUDA_COMPILE_MODE if self._device.type == "cuda" else "default")
            if inductor_options:
                # torch.compile takes a mode or options, not both: spell the mode out as its options.
                from torch._inductor import list_mode_options

                options = {**list_mode_options(self.compile_mode), **inductor_options}
                self._run = torch.compile(module, options=options)
                self.compile_mode += f" + {inductor_options}"
            else:
                self._run = torch.compile(module, mode=self.compile_mode)
        self._graphs: ShapeGraphs | None = None
        if cuda_graphs:  # ShapeGraphs refuses a device other than CUDA, naming the graph
            self._graphs = ShapeGraphs(self._call_module, self._device, f"graph {contract.name!r}")

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def cuda_graph_error(self) -> str | None:
        """Why this engine runs plainly: None while its CUDA graphs are in use."""
        if self._graphs is None:
            return "not asked for (cuda_graphs=False)"
        return self._graphs.error

    def _call_module(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        assert self._run is not None  # _infer checks it first
        result = self._run(*args)
        return (result,) if isinstance(result, torch.Tensor) else tuple(result)

    @contextlib.contextmanager
    def _on_stream(self, stream: Any) -> Iterator[None]:
        s = caller_stream(stream, self._device)
        if s is None:
            yield
            return
        with torch.cuda.stream(s):
            yield

    def _infer(self, feeds: dict[str, torch.Tensor], dims: dict[str, int], stream: Any) -> dict[str, torch.Tensor]:
        if self._run is None:
            raise EngineError(f"graph {self.contract.name!r}: the torch engine was closed; open a new one")
        args = [feeds[name] for name in self.contract.input_names]
        with self._on_stream(stream), torch.inference_mode():
            outputs = self._graphs(*args) if self._graphs is not None else self._call_module(*args)
        if len(outputs) != len(self.contract.outputs):
            raise EngineError(f"graph {self.contract.name!r}: the module returned {len(outputs)} tensors, "
                              f"the contract names {list(self.contract.output_names)}")
        return dict(zip(self.contract.output_names, outputs))

    def close(self) -> None:
        # Drop the module (and the compiled wrapper): the weights go when the last engine sharing
        # the model copy is closed.
        self.module = None
        self._run = None
        self._graphs = None

    def __repr__(self) -> str:
        compiled = f", compile={self.compile_mode!r}" if self.compile_mode else ""
        graphs = ", cuda_graphs=True" if self._graphs is not None else ""
        return f"TorchEngine(graph={self.contract.name!r}, device={self._device}{compiled}{graphs})"


def torch_engines(model: "HIDiff", device: str | int | torch.device = "cpu",
                  precision: Precision | str = Precision.FP32, compile: bool | str = False,
                  channels_last: bool | None = None, inductor_options: dict[str, Any] | None = None,
                  align_channels: bool | None = None, fuse_gates: bool = False, fuse_norms: bool = False,
                  cuda_graphs: bool = False) -> dict[str, Engine]:
    """The three graphs of ``model`` as engines on ``device`` in ``precision``.

    The model is deep-copied, moved and cast (fp16 only on CUDA: the CPU has no fast half kernels
    and several are missing). I/O stay float32 in every precision. ``channels_last`` (default: on
    CUDA) runs the image graphs in channels-last memory: cuDNN's tensor-core convolutions take it
    natively and the LayerNorms over channels need no transposes; ``False`` is the plain eager
    model, the benchmarks' baseline. ``inductor_options``, ``align_channels``, ``fuse_gates``,
    ``fuse_norms`` and ``cuda_graphs``: see the module docstring. Returns
    ``{"le_dm", "denoise_step", "restormer"}`` -> :class:`TorchEngine`.
    """
    from hidiff.graphs import graph_modules
    from hidiff.model import HIDiff

    if not isinstance(model, HIDiff):
        raise TypeError(f"model must be a hidiff.HIDiff, got {type(model).__name__}; load weights with HIDiff.load(path)")
    precision = Precision.parse(precision)
    target = parse_device(device)
    if precision is Precision.FP16 and target.type != "cuda":
        raise ValueError(f"precision fp16 on {target}: the PyTorch backend runs float16 only on CUDA devices; "
                         "use precision='fp32' on the CPU, or device='cuda'")
    dtype = COMPUTE_DTYPES[precision]
    if channels_last is None:
        channels_last = target.type == "cuda"
    # The options are checked before the model is copied and cast: a call that cannot work does no work.
    if fuse_gates or fuse_norms:
        from engines.kernels import unavailable_reason

        reason = unavailable_reason(target, dtype, channels_last)
        if reason is not None:
            raise ValueError(f"fuse_gates and fuse_norms run Triton kernels: they need a CUDA device, Triton, precision "
                             f"fp16 and channels_last, but {reason}")
    if cuda_graphs and target.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs a CUDA device, got {target}")
    copied = copy.deepcopy(model).to(device=target, dtype=dtype).eval()
    if align_channels is None:
        align_channels = target.type == "cuda" and precision is Precision.FP16
    if align_channels:
        from hidiff.aligned_channels import align_channels as pad_channels

        pad_channels(copied.restormer)
    if fuse_gates or fuse_norms:
        from engines.kernels import fuse_restormer

        fuse_restormer(copied.restormer, gates=fuse_gates, norms=fuse_norms, prior_attention=fuse_norms,
                       head_gram=fuse_norms)
    if channels_last:
        # nn.Module.to takes memory_format (documented); torch's overloads for type checkers omit it.
        copied = copied.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    modules = graph_modules(copied, dtype, channels_last)
    contracts = graph_contracts(copied.config.prior_tokens, copied.config.prior_channels)
    return {name: TorchEngine(modules[name], contracts[name], target, compile=compile, inductor_options=inductor_options,
                              cuda_graphs=cuda_graphs)
            for name in contracts}
