"""A function's CUDA work replayed as one CUDA graph per input shape (``torch.cuda.graph``).

A compiled Restormer launches several hundred kernels per frame; wherever the GPU finishes a
kernel before the host has queued the next, it idles. Replaying the frame's kernels as one
CUDA graph removes those gaps and the host's launch work. Used by the PyTorch backend's
``cuda_graphs=True`` (each image graph) and by the runtime's denoising loop (the T steps).

Capture rules followed here (PyTorch's CUDA graph notes):
- a shape is captured on its first call, after a plain warm-up run of the same inputs on a side
  stream that does the lazy work (``torch.compile``, Triton autotuning, cuDNN and cuBLAS set-up,
  allocations) outside the capture; that call returns the replay's outputs, so every output of
  a shape comes from the same recorded kernels: the first frame of a video equals the later
  ones bit for bit (a plain run may pick other kernels or algorithms than the captured one);
- the inputs live in static buffers the later calls copy into; the outputs are static buffers
  that the next call of the same shape overwrites (as TensorRT's engines do): use them, on the
  current stream, before the next call;
- the first replay is compared with the warm-up run; a failure or a difference turns graphs off
  for good for new shapes and says why in :attr:`ShapeGraphs.error` (that shape, and every later
  one, then runs plainly; shapes captured before keep their graphs);
- a call made while another capture is recording runs plainly, so an outer graph (the runtime's
  loop over engines that capture themselves) records the kernels, not a nested capture;
- at most ``max_graphs`` shapes get a graph (each pins its memory pool); later shapes always run plainly.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

log = logging.getLogger("engines")

# Replay vs plain run: the same kernels on the same data, so the outputs agree to rounding.
GRAPH_RTOL, GRAPH_ATOL = 1e-4, 1e-5
MAX_GRAPHS = 4

ShapeKey = tuple[tuple[tuple[int, ...], torch.dtype, tuple[int, ...]], ...]


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]  # static input buffers, copied into before each replay
    outputs: tuple[torch.Tensor, ...]  # static output buffers, written by each replay


class ShapeGraphs:
    """``graphs(*inputs)``: ``fn(*inputs)`` (a tuple of CUDA tensors), replayed as a CUDA graph
    from the first call of each input signature (shapes, dtypes, strides) on.

    ``fn`` must depend on nothing but its tensor arguments and state that stays put (weights,
    constants): a graph replays the kernels and addresses it recorded. ``what`` names the work in
    messages.
    """

    def __init__(self, fn: Callable[..., Sequence[torch.Tensor]], device: torch.device, what: str,
                 max_graphs: int = MAX_GRAPHS):
        if device.type != "cuda":
            raise ValueError(f"{what}: CUDA graphs need a CUDA device, got {device}")
        self.fn = fn
        self.device = device
        self.what = what
        self.max_graphs = max_graphs
        self.error: str | None = None
        self._plain: set[ShapeKey] = set()  # signatures that run plainly for good
        self._graphs: dict[ShapeKey, _Captured] = {}

    @property
    def captured(self) -> int:
        """How many shapes have a graph."""
        return len(self._graphs)

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if torch.cuda.is_current_stream_capturing():
            return tuple(self.fn(*inputs))  # an outer capture records these kernels
        key: ShapeKey = tuple((tuple(x.shape), x.dtype, tuple(x.stride())) for x in inputs)
        captured = self._graphs.get(key)
        if captured is None:
            if key in self._plain or self.error is not None or len(self._graphs) >= self.max_graphs:
                # Decided once per signature: a shape never switches between plain runs and replays.
                self._plain.add(key)
                return tuple(self.fn(*inputs))
            return self._capture(key, inputs)
        for buffer, x in zip(captured.inputs, inputs):
            buffer.copy_(x)
        captured.graph.replay()
        return captured.outputs

    def _capture(self, key: ShapeKey, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Warm up, capture ``fn`` for this signature, replay it once and check it against the
        warm-up run; returns the replay's outputs, or the warm-up's when anything fails (this
        signature then runs plainly for good, and no new shape is captured)."""
        static = tuple(x.clone(memory_format=torch.preserve_format) for x in inputs)
        # The plain run goes on a side stream, as PyTorch's notes ask of the warm-up before a capture.
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            plain = tuple(self.fn(*static))
        current.wait_stream(side)
        for x in plain:
            x.record_stream(current)  # the caller uses (and frees) them on its stream
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = tuple(self.fn(*static))
            graph.replay()
        except RuntimeError as exc:
            self._give_up(f"capture failed ({type(exc).__name__}: {exc})")
            return plain
        for got, want in zip(outputs, plain):
            if got.shape != want.shape or not torch.allclose(got, want, rtol=GRAPH_RTOL, atol=GRAPH_ATOL):
                diff = (got.float() - want.float()).abs().max().item() if got.shape == want.shape else float("nan")
                self._give_up(f"the replayed graph differed from the plain run (max |diff| {diff:.3g})")
                return plain
        self._graphs[key] = _Captured(graph, static, outputs)
        # The plain run's blocks stay cached outside the graph's own pool: hand them back, or the
        # device would hold the activations twice (this shape's graph now owns a set of its own).
        del plain
        torch.cuda.empty_cache()
        return outputs

    def _give_up(self, reason: str) -> None:
        self.error = f"{reason}; plain calls instead"
        log.warning("%s: %s", self.what, self.error)
