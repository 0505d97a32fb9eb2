"""Stand-ins for TensorRT and the CUDA runtime, which cannot run on the CPU machines the export
tests run on. They implement only the calls the export code makes, and record what they were
asked, so that the tests can check the builder configuration and the adoption of plans.

- :func:`fake_tensorrt`: the builder side (``Builder``, ``OnnxParser``, ``BuilderConfig``,
  profiles, DLA cores) and the runtime side (``Runtime.deserialize_cuda_engine`` of a "plan" that
  is ``b"ftrt"`` + JSON describing its I/O tensors and optimization profiles: :func:`fake_plan`).
- :func:`fake_cuda_runtime`: ``cuda.bindings.runtime`` with one GPU of a given name (so that
  ``engines.cuda.device_properties`` answers as on that GPU).

:func:`write_export` writes an export folder for them: three placeholder ONNX graphs with the
contracts' I/O and the export manifest.
"""
from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import onnx
from onnx import TensorProto, helper

from engines.artifacts import sha256_file
from engines.contracts import RESTORMER, graph_contracts

TRT_MODULES = ("tensorrt", "tensorrt_bindings", "tensorrt_rtx", "tensorrt_rtx_bindings")
ONNX_TYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}


def write_export(onnx_dir: Path, bad_op: str | None = None, precision: str = "fp16") -> Path:
    """Three small ONNX files with the contracts' I/O (the nodes are placeholders: only the fake
    parser reads them) and the export manifest the ONNX exporter writes."""
    onnx_dir.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, contract in graph_contracts().items():
        def info(spec):
            return helper.make_tensor_value_info(spec.name, ONNX_TYPES[spec.dtype], list(spec.shape))
        op = bad_op if bad_op and name == RESTORMER else "Identity"
        nodes = [helper.make_node(op, [contract.inputs[0].name], [contract.outputs[0].name])]
        graph = helper.make_graph(nodes, name, [info(s) for s in contract.inputs], [info(s) for s in contract.outputs])
        path = onnx_dir / f"{name}.onnx"
        onnx.save(helper.make_model(graph), path)
        entries[name] = {"file": path.name, "sha256": sha256_file(path), "contract": contract.as_dict()}
    manifest = {"graphs": entries, "precision": precision, "model": {"prior_tokens": 16, "prior_channels": 256}}
    (onnx_dir / "manifest.json").write_text(json.dumps(manifest))
    return onnx_dir


def fake_plan(io: dict[str, list[Any]], profiles: list[dict[str, list[list[int]]]], unreadable: bool = False) -> bytes:
    """Plan bytes for the runtime stand-in: ``io`` = {name: [mode, dtype, shape]} (mode "INPUT" or
    "OUTPUT", dtype a TensorRT DataType name, -1 for dynamic dimensions); ``profiles`` = per
    optimization profile {input: [min, opt, max]}."""
    return b"ftrt" + json.dumps({"io": io, "profiles": profiles, "unreadable": unreadable}).encode()


def fake_tensorrt(module_name: str, version: str, dla_cores: int = 0) -> ModuleType:
    """A stand-in for TensorRT's Python module.

    ``trt.fail_graphs`` names graphs whose build returns None; ``trt.builds``, ``trt.phases`` and
    ``trt.runtimes`` record what happened; ``trt.dla_cores`` is what ``builder.num_DLA_cores`` says.
    """
    trt = ModuleType(module_name)
    trt.__version__ = version
    trt.fail_graphs = set()
    trt.builds = []
    trt.phases = []
    trt.runtimes = []
    trt.dla_cores = dla_cores

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self):
            pass

    ILogger.Severity = Severity

    class Logger(ILogger):
        WARNING = Severity.WARNING

        def __init__(self, severity=Severity.WARNING):
            super().__init__()

        def log(self, severity, msg):
            pass

    class IProgressMonitor:
        def __init__(self):
            pass

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.name = flags, [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return SimpleNamespace(name=self.inputs[i])

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse_from_file(self, path):
            model = onnx.load(path)
            self.network.name = model.graph.name
            self.network.inputs = [i.name for i in model.graph.input]
            self.errors = [f"node {n.name or i}: no importer for op {n.op_type}"
                           for i, n in enumerate(model.graph.node) if n.op_type != "Identity"]
            self.errors += [f"while parsing {Path(path).name}"] if self.errors else []
            return not self.errors

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class Config:
        def __init__(self):
            self.profiles, self.pools, self.flags = [], {}, []
            self.builder_optimization_level = None
            self.profiling_verbosity = None
            self.progress_monitor = None
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool.name] = size

        def set_flag(self, flag):
            self.flags.append(flag.name)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile.shapes)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            return SimpleNamespace(serialize=lambda: b"cache:" + bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        @property
        def num_DLA_cores(self):
            return trt.dla_cores

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            self.logger.log(Severity.INFO, f"building {network.name}")
            self.logger.log(Severity.VERBOSE, "tactic noise")
            monitor = config.progress_monitor
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                assert monitor.step_complete("Building engine", 0) and monitor.step_complete("Building engine", 1)
                monitor.phase_finish("Building engine")
                trt.phases.append(network.name)
            trt.builds.append(network.name)
            if network.name in trt.fail_graphs:
                self.logger.log(Severity.ERROR, f"no implementation for a layer of {network.name}")
                return None
            asked = {"graph": network.name, "flags": network.flags, "profiles": config.profiles,
                     "opt_level": config.builder_optimization_level, "pools": config.pools,
                     "verbosity": config.profiling_verbosity.name, "device": config.default_device_type.name,
                     "dla_core": config.DLA_core, "builder_flags": config.flags}
            return b"ftrt" + json.dumps(asked).encode()

    class Engine:
        def __init__(self, spec):
            self.io, self.profiles = spec["io"], spec["profiles"]

        num_io_tensors = property(lambda self: len(self.io))
        num_optimization_profiles = property(lambda self: len(self.profiles))

        def get_tensor_name(self, i):
            return list(self.io)[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode[self.io[name][0]]

        def get_tensor_dtype(self, name):
            return trt.DataType[self.io[name][1]]

        def get_tensor_shape(self, name):
            return tuple(self.io[name][2])

        def get_tensor_profile_shape(self, name, index):
            return [tuple(s) for s in self.profiles[index][name]]

    class Runtime:
        def __init__(self, logger):
            self.DLA_core = -1
            trt.runtimes.append(self)

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if not data.startswith(b"ftrt"):
                return None
            spec = json.loads(data[4:])
            return None if spec.get("unreadable") else Engine(spec)

    trt.ILogger, trt.Logger, trt.IProgressMonitor = ILogger, Logger, IProgressMonitor
    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    trt.ProfilingVerbosity = enum.Enum("ProfilingVerbosity", "LAYER_NAMES_ONLY DETAILED")
    trt.DeviceType = enum.Enum("DeviceType", "GPU DLA")
    trt.BuilderFlag = enum.Enum("BuilderFlag", "TF32 GPU_FALLBACK")
    trt.DataType = enum.Enum("DataType", "FLOAT HALF INT64 INT32")
    trt.TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
    trt.Dims = tuple
    return trt


def fake_cuda_runtime(gpu_name: str, capability: tuple[int, int] = (8, 7), driver: int = 12060) -> ModuleType:
    """``cuda.bindings.runtime`` with one GPU called ``gpu_name`` (the calls engines.cuda makes)."""
    rt = ModuleType("cuda.bindings.runtime")
    rt.cudaError_t = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorNoDevice": 100})
    success = rt.cudaError_t.cudaSuccess
    properties = SimpleNamespace(name=gpu_name.encode(), major=capability[0], minor=capability[1],
                                 totalGlobalMem=64 << 30, multiProcessorCount=16)
    rt.cudaGetDeviceCount = lambda: (success, 1)
    rt.cudaGetDeviceProperties = lambda index: (success, properties)
    rt.cudaDriverGetVersion = lambda: (success, driver)
    rt.cudaGetErrorString = lambda err: (success, b"no error")
    return rt


@contextmanager
def cuda_runtime(monkeypatch: Any, gpu_name: str, capability: tuple[int, int] = (8, 7)) -> Iterator[ModuleType]:
    """Install :func:`fake_cuda_runtime` for engines.cuda (its module cache cleared before and after)."""
    from engines import cuda

    bindings = ModuleType("cuda.bindings")
    bindings.runtime = fake_cuda_runtime(gpu_name, capability)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", bindings.runtime)
    cuda.cudart.cache_clear()
    try:
        yield bindings.runtime
    finally:
        cuda.cudart.cache_clear()
