"""PyTorch backend: the modules of :mod:`hidiff.graphs` behind the engine interface.

The reference every other backend is compared with, and the backend that needs nothing but
torch. :func:`torch_engines` copies a :class:`~hidiff.model.HIDiff` to the device and dtype (the
caller's model is left as it is), prepares the copy as a :class:`~engines.torch_settings.TorchSettings`
says (memory layout, padded channels, fused Triton kernels, ``torch.compile``, CUDA graphs) and
wraps its three graph modules. Each call runs under ``torch.inference_mode`` on the caller's CUDA
stream without a host synchronisation, so a ``torch.cuda.graph`` can capture it (the denoising
loop of :mod:`engines.denoise_loop` does).
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
from engines.torch_settings import EAGER, TorchSettings, default_settings

if TYPE_CHECKING:
    from hidiff.model import HIDiff

COMPUTE_DTYPES = {Precision.FP32: torch.float32, Precision.FP16: torch.float16}


class TorchEngine(Engine):
    """One graph module (float32 I/O, see :mod:`hidiff.graphs`) on ``device``.

    ``module`` must already live on ``device`` in its compute dtype, prepared as ``settings``
    say (:func:`torch_engines` builds all three for a model); the engine applies the settings'
    ``compile_mode``, ``inductor_options`` and ``cuda_graphs``.
    """

    backend = "torch"

    def __init__(self, module: nn.Module, contract: GraphContract, device: str | int | torch.device = "cpu",
                 settings: TorchSettings = EAGER):
        super().__init__(contract)
        self._device = parse_device(device)
        held = {p.device for p in module.parameters()} | {b.device for b in module.buffers()}
        stray = sorted(str(d) for d in held if d != self._device)
        if stray:
            raise ValueError(f"graph {contract.name!r}: the module has tensors on {stray}, the engine runs on "
                             f"{self._device}; move it with module.to({str(self._device)!r}) first")
        self.settings = settings
        self.module: nn.Module | None = module.eval()
        self.compile_mode: str | None = settings.compile_mode
        self._run: Callable[..., Any] | None = module
        if settings.compile_mode is not None:
            if settings.inductor_options:
                # torch.compile takes a mode or options, not both: spell the mode out as its options.
                from torch._inductor import list_mode_options

                options = {**list_mode_options(settings.compile_mode), **dict(settings.inductor_options)}
                self._run = torch.compile(module, options=options)
                self.compile_mode = f"{settings.compile_mode} + {dict(settings.inductor_options)}"
            else:
                self._run = torch.compile(module, mode=settings.compile_mode)
        self._graphs: ShapeGraphs | None = None
        if settings.cuda_graphs:  # ShapeGraphs refuses a device other than CUDA, naming the graph
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


def fuse_kernels(restormer: nn.Module, settings: TorchSettings) -> None:
    """Swap the Triton kernels that ``settings`` ask for into ``restormer``, in place."""
    if not settings.kernels:
        return
    from engines.kernels import fuse_restormer

    # MDTA's per-head q k^T kernel lives inside the blocks whose norms are fused.
    fuse_restormer(restormer, gates=settings.fuse_gdfn_gate, norms=settings.fuse_block_norms,
                   prior_attention=settings.fuse_prior_attention, head_gram=settings.fuse_block_norms)


def prepare_model(model: "HIDiff", device: torch.device, dtype: torch.dtype, settings: TorchSettings) -> "HIDiff":
    """A copy of ``model`` on ``device`` in ``dtype``, prepared as ``settings`` say: channel counts
    padded, Triton kernels swapped in, channels-last memory (compilation and CUDA graphs are the
    engines'). The caller's model is left as it is; ``settings`` are not checked here."""
    copied = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    if settings.pad_channels:
        from hidiff.aligned_channels import align_channels

        align_channels(copied.restormer)
    fuse_kernels(copied.restormer, settings)
    if settings.channels_last:
        # nn.Module.to takes memory_format (documented); torch's overloads for type checkers omit it.
        copied = copied.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return copied


def torch_engines(model: "HIDiff", device: str | int | torch.device = "cpu",
                  precision: Precision | str = Precision.FP32,
                  settings: TorchSettings | None = None) -> dict[str, Engine]:
    """The three graphs of ``model`` as engines on ``device`` in ``precision``, prepared as
    ``settings`` say (None: :func:`~engines.torch_settings.default_settings` for the device and
    precision: the fastest form on CUDA in FP16, the eager model on the CPU).

    The model is deep-copied, moved and cast (fp16 only on CUDA: the CPU has no fast half kernels
    and several are missing). I/O stay float32 in every precision. Returns
    ``{"le_dm", "denoise_step", "restormer"}`` -> :class:`TorchEngine`.
    """
    from hidiff.graphs import graph_modules
    from hidiff.model import HIDiff

    if not isinstance(model, HIDiff):
        raise TypeError(f"model must be a hidiff.HIDiff, got {type(model).__name__}; "
                        "load weights with HIDiff.load(path)")
    if settings is not None and not isinstance(settings, TorchSettings):
        raise TypeError(f"settings must be an engines.torch_settings.TorchSettings, got {type(settings).__name__}; "
                        "use TorchSettings.preset(name)")
    precision = Precision.parse(precision)
    target = parse_device(device)
    if precision is Precision.FP16 and target.type != "cuda":
        raise ValueError(f"precision fp16 on {target}: the PyTorch backend runs float16 only on CUDA devices; "
                         "use precision='fp32' on the CPU, or device='cuda'")
    if settings is None:
        settings = default_settings(target, precision)
    settings.check(target, precision)  # before the model is copied and cast: a call that cannot work does no work
    dtype = COMPUTE_DTYPES[precision]
    copied = prepare_model(model, target, dtype, settings)
    modules = graph_modules(copied, dtype, settings.channels_last)
    contracts = graph_contracts(copied.config.prior_tokens, copied.config.prior_channels)
    return {name: TorchEngine(modules[name], contracts[name], target, settings) for name in contracts}
