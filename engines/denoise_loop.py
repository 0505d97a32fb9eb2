"""The T reverse diffusion steps z_T -> z_0, replayed as one CUDA graph where the backend allows.

The loop itself is one function (:meth:`DenoiseLoop._steps`): the same code runs eagerly and is
what a CUDA graph captures, and nothing in it depends on the backend. Capturing pays off because
the steps are tiny ((B, N, C') tensors) and launch-bound. Their shapes do not depend on the image
size, so one graph per batch size serves every frame.

The capture rules are :class:`engines.cuda_graphs.ShapeGraphs`': the first call of a batch size
is captured (after a plain warm-up run), ``cond`` is copied into a static buffer, z_T is constant,
the schedule indices are int64 (1,) device tensors made once, and the first replay is compared
with a plain run; any failure or difference turns graphs off for this loop and the reason shows
in :attr:`DenoiseLoop.mode`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from engines.base import Engine
from engines.cuda_graphs import MAX_GRAPHS, ShapeGraphs

# Backends whose work torch.cuda.graph can capture through Engine.infer: the PyTorch backend
# launches its kernels on the current stream, TensorRT enqueues on a stream ordered after and
# before it. ONNX Runtime's CUDA provider runs on its own stream, outside any torch capture.
CAPTURABLE_BACKENDS = frozenset({"torch", "tensorrt", "tensorrt_rtx", "aoti"})


class DenoiseLoop:
    """``run(cond)``: z_0 (B, N, C') float32 from cond (B, N, C') and the fixed z_T.

    ``engine``: the denoise_step engine; ``noise``: z_T (N, C') float32 on the engine's device,
    shared by every frame and batch row (so a video does not flicker); ``timesteps``: schedule
    indices T-1 .. 0; ``cuda_graphs``: try CUDA graphs (only on CUDA and capturable backends);
    ``backend``: the engines' registry name (see :data:`CAPTURABLE_BACKENDS`).
    """

    def __init__(self, engine: Engine, noise: torch.Tensor, timesteps: Sequence[int], cuda_graphs: bool,
                 backend: str):
        self.engine = engine
        self.device = noise.device
        self.noise = noise
        self._t = [torch.tensor([t], dtype=torch.int64, device=self.device) for t in timesteps]
        self._z_T: dict[int, torch.Tensor] = {}
        self._graphs: ShapeGraphs | None = None
        self._no_graph: str | None = None
        if not cuda_graphs:
            self._no_graph = "CUDA graphs turned off (cuda_graphs=False)"
        elif self.device.type != "cuda":
            self._no_graph = f"no CUDA graphs on {self.device}"
        elif backend not in CAPTURABLE_BACKENDS:
            self._no_graph = (f"the {backend} backend runs on its own CUDA stream, which torch cannot capture; "
                              "plain loop of T engine calls")
        else:
            self._graphs = ShapeGraphs(self._graphed_steps, self.device, "denoising loop")

    @property
    def graph_error(self) -> str | None:
        """Why the loop runs plainly (None while CUDA graphs are in use)."""
        return self._no_graph if self._graphs is None else self._graphs.error

    @property
    def captured(self) -> int:
        """How many batch sizes have a CUDA graph."""
        return 0 if self._graphs is None else self._graphs.captured

    @property
    def mode(self) -> str:
        if self.graph_error is None:
            return f"one CUDA graph per batch size (up to {MAX_GRAPHS}), from its first call on"
        if getattr(self.engine, "uses_cuda_graph", False):
            return "T engine calls, each replaying the engine's own CUDA graph (ONNX Runtime's CUDA provider)"
        return f"plain loop ({self.graph_error})"

    def z_T(self, batch: int) -> torch.Tensor:
        """z_T repeated over the batch: (batch, N, C'), made once per batch size."""
        if batch not in self._z_T:
            self._z_T[batch] = self.noise.expand(batch, *self.noise.shape).contiguous()
        return self._z_T[batch]

    def _steps(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for t in self._t:  # t = T-1 .. 0
            z = self.engine.infer({"z": z, "cond": cond, "t": t})["z_prev"]
        return z

    def _graphed_steps(self, cond: torch.Tensor) -> tuple[torch.Tensor]:
        return (self._steps(self.z_T(cond.shape[0]), cond),)

    def run(self, cond: torch.Tensor) -> torch.Tensor:
        """cond (B, N, C') float32 on the device -> z_0 (B, N, C') float32.

        The result may be a buffer that the next ``run`` with the same batch size overwrites:
        use it (on the current stream) before the next call.
        """
        if self._graphs is not None:
            return self._graphs(cond)[0]
        return self._steps(self.z_T(cond.shape[0]), cond)
