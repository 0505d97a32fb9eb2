"""One engine interface over TensorRT, ONNX Runtime and PyTorch (see engines/base.py).

Open engines through the registry: ``open_engines(backend, model=..., artifacts=..., device=...)``;
``available_backends(device)`` says which backends can run here and why the others cannot.
:class:`Pipeline` runs HI-Diff's inference chain over three engines; :class:`TorchSettings` says
how the PyTorch backend runs the model.
Backend libraries (onnxruntime, tensorrt) are imported only when a backend needs them.
"""
from engines.base import BackendUnavailable, Engine, EngineError, as_torch
from engines.contracts import GRAPH_NAMES, GraphContract, Precision, ShapeProfile, TensorSpec, graph_contracts
from engines.onnxruntime_backend import Fallback, OnnxRuntimeEngine, onnxruntime_engines
from engines.pipeline import Pipeline
from engines.registry import BACKENDS, EngineSet, available_backends, open_engines
from engines.tiling import Tiling
from engines.torch_backend import TorchEngine, torch_engines
from engines.torch_settings import TorchSettings

__all__ = [
    "BACKENDS", "GRAPH_NAMES", "BackendUnavailable", "Engine", "EngineError", "EngineSet", "Fallback",
    "GraphContract", "OnnxRuntimeEngine", "Pipeline", "Precision", "ShapeProfile", "TensorSpec", "Tiling",
    "TorchEngine", "TorchSettings", "as_torch", "available_backends", "graph_contracts", "onnxruntime_engines", "open_engines", "torch_engines",
]
