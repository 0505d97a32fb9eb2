"""engines.tensorrt_backend.

Without TensorRT: module selection, dtype names, profile selection and its error, and that a
missing TensorRT is BackendUnavailable. The module-selection tests put stand-in modules into
``sys.modules`` because TensorRT cannot be installed on the CPU machine; they check only which
module is picked. With a GPU: TensorRT-RTX's refusal of unsupported GPUs (H100). With a GPU and
TensorRT or TensorRT-RTX: tiny graphs built by ``build_engines`` and run for real, checked
against numpy, including several profiles, buffer reuse and CUDA-graph replay.
"""
from __future__ import annotations

import enum
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from engines.artifacts import sha256_file
from engines.base import BackendUnavailable, EngineError
from engines.contracts import DENOISE_STEP, LE_DM, ShapeProfile, graph_contracts
from engines.plan import CorruptPlan, plan_path_for
from engines.tensorrt_backend import TensorRTEngine, dtype_name, import_tensorrt, select_profile

TRT_MODULES = ("tensorrt", "tensorrt_bindings", "tensorrt_rtx", "tensorrt_rtx_bindings")


@pytest.fixture
def no_tensorrt(monkeypatch):
    for name in TRT_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes the import fail


def stand_in(name: str, version: str) -> ModuleType:
    module = ModuleType(name)
    module.__version__ = version
    return module


# ----------------------------------------------------------------------------- without TensorRT


def test_auto_prefers_tensorrt_then_tensorrt_rtx(monkeypatch, no_tensorrt):
    monkeypatch.setitem(sys.modules, "tensorrt_rtx_bindings", stand_in("tensorrt_rtx_bindings", "1.2"))
    module, flavour = import_tensorrt("auto")
    assert (module.__name__, flavour) == ("tensorrt_rtx_bindings", "tensorrt_rtx")
    monkeypatch.setitem(sys.modules, "tensorrt_bindings", stand_in("tensorrt_bindings", "10.3"))
    module, flavour = import_tensorrt("auto")
    assert (module.__name__, flavour) == ("tensorrt_bindings", "tensorrt")
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", stand_in("tensorrt_rtx", "1.2"))
    assert import_tensorrt("tensorrt_rtx")[0].__name__ == "tensorrt_rtx"


def test_missing_tensorrt_names_what_was_tried(no_tensorrt):
    with pytest.raises(BackendUnavailable) as info:
        import_tensorrt()
    message = str(info.value)
    assert all(f"{name}:" in message for name in TRT_MODULES) and "onnxruntime backend" in message
    with pytest.raises(BackendUnavailable, match="tensorrt_rtx_bindings"):
        import_tensorrt("tensorrt_rtx")
    with pytest.raises(ValueError, match="unknown TensorRT flavour 'trt'"):
        import_tensorrt("trt")


def test_an_engine_without_tensorrt_is_backend_unavailable(tmp_path, no_tensorrt):
    with pytest.raises(BackendUnavailable):
        TensorRTEngine(tmp_path / "le_dm.plan", graph_contracts()[LE_DM])


def test_dtype_names_follow_the_contracts_vocabulary():
    DataType = enum.Enum("DataType", "FLOAT HALF BF16 INT64 INT32 BOOL FP8")
    assert [dtype_name(d) for d in DataType] == ["float32", "float16", "bfloat16", "int64", "int32", "bool", "fp8"]


PROFILES = [
    {"blur": ((1, 3, 256, 256), (1, 3, 720, 1280), (4, 3, 1080, 1920)), "prior": ((1, 16, 256),) * 2 + ((4, 16, 256),)},
    {"blur": ((1, 3, 720, 1280),) * 3, "prior": ((1, 16, 256),) * 3},
]


def test_the_tightest_covering_profile_is_chosen():
    assert select_profile(PROFILES, {"blur": (1, 3, 720, 1280), "prior": (1, 16, 256)}) == 1
    assert select_profile(PROFILES, {"blur": (2, 3, 720, 1280), "prior": (2, 16, 256)}) == 0
    assert select_profile(PROFILES, {"blur": (1, 3, 256, 264), "prior": (1, 16, 256)}) == 0


def test_a_shape_outside_every_profile_names_shape_and_ranges():
    with pytest.raises(ValueError) as info:
        select_profile(PROFILES, {"blur": (1, 3, 2160, 3840), "prior": (1, 16, 256)}, where="graph 'restormer'")
    message = str(info.value)
    assert message.startswith("graph 'restormer': input shape blur (1, 3, 2160, 3840), prior (1, 16, 256) is outside")
    assert "profile 0: blur (1..4, 3, 256..1080, 256..1920), prior (1..4, 16, 256)" in message
    assert "profile 1: blur (1, 3, 720, 1280), prior (1, 16, 256)" in message
    assert "--profile BxHxW:BxHxW:BxHxW" in message


# ----------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tensorrt_rtx_refuses_gpus_it_does_not_support_before_reading_the_plan(tmp_path, monkeypatch, no_tensorrt):
    from engines.cuda import device_properties
    from engines.plan import supports_compute_capability

    # Only the module's version is read before the refusal, so a stand-in is enough.
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", stand_in("tensorrt_rtx", "1.2.0.54"))
    major, minor = device_properties(0).compute_capability
    if supports_compute_capability("tensorrt_rtx", (major, minor)):
        with pytest.raises(CorruptPlan, match="does not exist"):  # past the GPU check, on to the plan
            TensorRTEngine(tmp_path / "le_dm.plan", flavour="tensorrt_rtx")
    else:
        with pytest.raises(EngineError, match=rf"compute capability {major}\.{minor} is not supported"):
            TensorRTEngine(tmp_path / "le_dm.plan", flavour="tensorrt_rtx")


# ----------------------------------------------------------------------------- tiny graphs, run for real

N, C = 4, 8  # prior tokens and channels of the tiny graphs
IR_VERSION = 8  # opset 17's IR version; newer onnx writes IR versions that older runtimes and parsers refuse
CONTRACTS = graph_contracts(prior_tokens=N, prior_channels=C)
WEIGHT = np.linspace(-1.0, 1.0, 3 * N * C, dtype=np.float32).reshape(3, N * C)


def tiny_le_dm() -> onnx.ModelProto:
    """cond = reshape(mean_{H,W}(blur) @ W, (B, N, C)): same I/O as the real LE_DM."""
    nodes = [
        helper.make_node("ReduceMean", ["blur"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["cond"]),
    ]
    graph = helper.make_graph(
        nodes, LE_DM,
        [helper.make_tensor_value_info("blur", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("cond", TensorProto.FLOAT, ["batch", N, C])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, WEIGHT.shape, WEIGHT.ravel()),
                     helper.make_tensor("shape", TensorProto.INT64, [3], [-1, N, C])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def tiny_denoise_step() -> onnx.ModelProto:
    """z_prev = 0.5 z + t * cond: same I/O as the real denoising step."""
    nodes = [
        helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["z", "half"], ["a"]),
        helper.make_node("Mul", ["cond", "tf"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["z_prev"]),
    ]
    prior = ["batch", N, C]
    graph = helper.make_graph(
        nodes, DENOISE_STEP,
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, prior),
         helper.make_tensor_value_info("cond", TensorProto.FLOAT, prior),
         helper.make_tensor_value_info("t", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("z_prev", TensorProto.FLOAT, prior)],
        initializer=[helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def le_dm_reference(blur: np.ndarray) -> np.ndarray:
    return (blur.mean(axis=(2, 3)) @ WEIGHT).reshape(-1, N, C)


def write_tiny_export(onnx_dir: Path) -> Path:
    onnx_dir.mkdir(parents=True)
    entries = {}
    for name, model in ((LE_DM, tiny_le_dm()), (DENOISE_STEP, tiny_denoise_step())):
        onnx.checker.check_model(model)
        onnx.save(model, onnx_dir / f"{name}.onnx")
        entries[name] = {"file": f"{name}.onnx", "sha256": sha256_file(onnx_dir / f"{name}.onnx"),
                         "contract": CONTRACTS[name].as_dict()}
    model = {"prior_tokens": N, "prior_channels": C}
    (onnx_dir / "manifest.json").write_text(json.dumps({"graphs": entries, "precision": "fp32", "model": model}))
    return onnx_dir


def test_the_tiny_graphs_compute_their_references(tmp_path):
    """Checks the test graphs themselves, with ONNX Runtime on the CPU."""
    import onnxruntime as ort

    onnx_dir = write_tiny_export(tmp_path / "onnx")
    blur = np.random.default_rng(0).random((2, 3, 40, 48), dtype=np.float32)
    le_dm = ort.InferenceSession(str(onnx_dir / "le_dm.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(le_dm.run(None, {"blur": blur})[0], le_dm_reference(blur), rtol=1e-5, atol=1e-6)
    step = ort.InferenceSession(str(onnx_dir / "denoise_step.onnx"), providers=["CPUExecutionProvider"])
    z, cond = np.ones((2, N, C), np.float32), np.full((2, N, C), 2.0, np.float32)
    out = step.run(None, {"z": z, "cond": cond, "t": np.array([3], np.int64)})[0]
    np.testing.assert_allclose(out, 0.5 * z + 3 * cond)


def _flavour_or_skip(flavour: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    candidates = {"tensorrt": ("tensorrt", "tensorrt_bindings"),
                  "tensorrt_rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings")}[flavour]
    for module in candidates:
        try:
            importlib.import_module(module)
            break
        except (ImportError, OSError):
            continue
    else:
        pytest.skip(f"{flavour} is not installed")
    from engines.cuda import device_properties
    from engines.plan import supports_compute_capability

    if not supports_compute_capability(flavour, device_properties(0).compute_capability):
        pytest.skip(f"{flavour} does not run on this GPU")


@pytest.fixture(params=["tensorrt", "tensorrt_rtx"])
def tiny_plans(request, tmp_path) -> tuple[str, Path]:
    from export.trt_build import build_engines

    flavour = request.param
    _flavour_or_skip(flavour)
    onnx_dir = write_tiny_export(tmp_path / "onnx")
    profiles = [ShapeProfile((1, 32, 32), (1, 64, 64), (2, 128, 128)),
                ShapeProfile((1, 256, 256), (1, 256, 256), (1, 256, 256))]
    report = build_engines(onnx_dir, tmp_path / "plans", profiles, graphs=[LE_DM, DENOISE_STEP], flavour=flavour)
    assert report.ok, report.lines()
    again = build_engines(onnx_dir, tmp_path / "plans", profiles, graphs=[LE_DM, DENOISE_STEP], flavour=flavour)
    assert [r.status for r in again.results] == ["reused", "reused"]
    return flavour, tmp_path / "plans"


@pytest.mark.gpu
def test_le_dm_runs_in_both_profiles_and_refuses_other_shapes(tiny_plans):
    flavour, plans = tiny_plans
    with TensorRTEngine(plan_path_for(plans, LE_DM), flavour=flavour, precision="fp32") as engine:
        assert engine.contract.name == LE_DM and len(engine.profiles) == 2
        for shape in [(2, 3, 64, 96), (1, 3, 256, 256), (1, 3, 32, 128)]:
            blur = torch.rand(shape, device="cuda")
            cond = engine.infer({"blur": blur})["cond"]
            torch.cuda.synchronize()
            np.testing.assert_allclose(cond.cpu().numpy(), le_dm_reference(blur.cpu().numpy()), rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match=r"blur \(1, 3, 512, 512\) is outside every optimization profile"):
            engine.infer({"blur": torch.rand(1, 3, 512, 512, device="cuda")})
        host = engine.infer_host({"blur": np.ones((1, 3, 64, 64), np.float32)})
        np.testing.assert_allclose(host["cond"], le_dm_reference(np.ones((1, 3, 64, 64), np.float32)), rtol=1e-5)


class CountingContext:
    """TensorRT's execution context with its enqueues counted; everything else passes through."""

    def __init__(self, context):
        self._context, self.enqueues = context, 0

    def execute_async_v3(self, stream_handle):
        self.enqueues += 1
        return self._context.execute_async_v3(stream_handle)

    def __getattr__(self, name):
        return getattr(self._context, name)


@pytest.mark.gpu
def test_the_denoising_loop_reuses_buffers_and_replays_a_cuda_graph(tiny_plans):
    flavour, plans = tiny_plans
    z0 = torch.randn(1, N, C, device="cuda")
    cond = torch.randn(1, N, C, device="cuda")
    expected = z0.clone()
    for t in range(7, -1, -1):
        expected = 0.5 * expected + t * cond

    with TensorRTEngine(plan_path_for(plans, DENOISE_STEP), flavour=flavour, cuda_graphs=True) as engine:
        engine._context = context = CountingContext(engine._context)
        enqueued = []
        for _ in range(2):  # the second loop replays the graph captured during the first
            z, pointers, before = z0, set(), context.enqueues
            for t in range(7, -1, -1):
                out = engine.infer({"z": z, "cond": cond, "t": torch.tensor([t], device="cuda")})
                pointers.add(out["z_prev"].data_ptr())
                z = out["z_prev"]  # fed straight back: the engine copies inputs before it writes outputs
            torch.cuda.synchronize()
            torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-5)
            assert len(pointers) == 1  # one output buffer for the repeated shape: no allocation per step
            enqueued.append(context.enqueues - before)
        state = next(iter(engine._states.values()))
        if state.graph is None:  # only a context that says it cannot be captured may refuse
            assert flavour == "tensorrt_rtx", state.graph_error
            assert state.graph_error == "TensorRT reports the execution context is not stream-capturable"
            assert enqueued == [8, 8]
        else:
            # First loop: one plain enqueue, one under capture, then replays; second loop: replays only.
            assert enqueued == [2, 0]


# ----------------------------------------------------------------------------- the engine's own logic on a GPU
#
# These run TensorRTEngine against a stand-in for TensorRT's runtime objects, because TensorRT
# cannot be installed on the machines the tests were written on. The stand-in computes the tiny
# denoising step with torch on the stream and addresses it is given, without allocating, so the
# engine's profile selection, buffer reuse, stream ordering and CUDA-graph capture run for real.


class _Interface:
    """A raw device pointer as a torch-viewable array (``__cuda_array_interface__``)."""

    def __init__(self, ptr: int, shape: tuple[int, ...], typestr: str):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False), "version": 3}


def fake_runtime_module(version: str = "10.13.0.35") -> ModuleType:
    trt = ModuleType("tensorrt")
    trt.__version__ = version
    trt.DataType = enum.Enum("DataType", "FLOAT HALF INT64 INT32")
    trt.TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
    trt.executions = []

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    class Context:
        def __init__(self, engine):
            self.engine, self.profile, self.shapes, self.views = engine, 0, {}, {}
            self.scratch = torch.empty(1, device="cuda")  # the context's "activation memory"

        @property
        def active_optimization_profile(self):
            return self.profile

        def set_optimization_profile_async(self, index, stream):
            self.profile = index
            return 0 <= index < len(self.engine.profiles)

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.profiles[self.profile].get(name, (shape, shape, shape))
            self.shapes[name] = tuple(shape)
            return all(a <= v <= b for a, v, b in zip(lo, shape, hi))

        def infer_shapes(self):
            return [n for n in ("z", "cond", "t") if n not in self.shapes]

        def get_tensor_shape(self, name):
            return self.shapes["z"] if name == "z_prev" else self.shapes[name]

        def set_tensor_address(self, name, ptr):
            typestr = "<i8" if name == "t" else "<f4"
            self.views[name] = torch.as_tensor(_Interface(ptr, self.get_tensor_shape(name), typestr), device="cuda")
            return True

        def execute_async_v3(self, stream_handle):
            with torch.cuda.stream(torch.cuda.ExternalStream(stream_handle)):
                v = self.views
                self.scratch.copy_(v["t"])
                v["z_prev"].copy_(v["cond"]).mul_(self.scratch).add_(v["z"], alpha=0.5)  # 0.5 z + t cond
            trt.executions.append(self.shapes["z"])
            return True

    class Engine:
        def __init__(self, spec):
            self.spec = spec
            self.profiles = [{n: tuple(tuple(s) for s in r) for n, r in p.items()} for p in spec["profiles"]]
            self.io = spec["io"]

        num_io_tensors = property(lambda self: len(self.io))
        num_optimization_profiles = property(lambda self: len(self.profiles))
        device_memory_size_v2 = 4

        def get_tensor_name(self, i):
            return list(self.io)[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode[self.io[name][0]]

        def get_tensor_dtype(self, name):
            return trt.DataType[self.io[name][1]]

        def get_tensor_shape(self, name):
            return tuple(self.io[name][2])

        def get_tensor_profile_shape(self, name, index):
            return list(self.profiles[index][name])

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            spec = json.loads(bytes(data)[4:])
            return None if spec.get("unreadable") else Engine(spec)

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


def write_fake_plan(plans: Path, **changes) -> Path:
    from engines.cuda import device_properties
    from engines.plan import PlanManifest, manifest_path

    prior = ((1, N, C), (1, N, C), (2, N, C))
    spec = {"io": {"z": ["INPUT", "FLOAT", [-1, N, C]], "cond": ["INPUT", "FLOAT", [-1, N, C]],
                   "t": ["INPUT", "INT64", [1]], "z_prev": ["OUTPUT", "FLOAT", [-1, N, C]]},
            "profiles": [{"z": prior, "cond": prior}, {"z": ((3, N, C),) * 3, "cond": ((3, N, C),) * 3}]}
    spec.update(changes)
    plan = b"ftrt" + json.dumps(spec).encode()
    gpu = device_properties(0)
    path = plan_path_for(plans, DENOISE_STEP)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plan)
    PlanManifest.describe(
        plan, graph=DENOISE_STEP, precision="fp32", flavour="tensorrt", trt_version="10.13.0.35", gpu_name=gpu.name,
        compute_capability=gpu.compute_capability, profiles=(ShapeProfile(),), onnx_sha256="0" * 64, opt_level=3,
        contract=CONTRACTS[DENOISE_STEP].as_dict(),
    ).write(manifest_path(path))
    return path


@pytest.fixture
def fake_trt(monkeypatch, no_tensorrt) -> ModuleType:
    trt = fake_runtime_module()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def denoise(engine, z0, cond, steps=8):
    z = z0
    for t in range(steps - 1, -1, -1):
        z = engine.infer({"z": z, "cond": cond, "t": torch.tensor([t], device="cuda")})["z_prev"]
    return z


def reference(z0, cond, steps=8):
    z = z0.clone()
    for t in range(steps - 1, -1, -1):
        z = 0.5 * z + t * cond
    return z


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_engine_logic_runs_the_loop_on_its_own_stream_without_allocating(tmp_path, fake_trt):
    path = write_fake_plan(tmp_path)
    z0, cond = torch.randn(2, N, C, device="cuda"), torch.randn(2, N, C, device="cuda")
    with TensorRTEngine(path, flavour="tensorrt") as engine:
        assert engine.contract.input_names == ("z", "cond", "t")  # read from the plan's manifest
        assert engine.activation_bytes == 4
        caller = torch.cuda.Stream()
        with torch.cuda.stream(caller):  # the caller's stream orders the work, not the default stream
            z = denoise(engine, z0, cond)
            first = z.data_ptr()
            expected = reference(z0, cond)
        caller.synchronize()
        torch.testing.assert_close(z, expected)
        assert denoise(engine, z0, cond).data_ptr() == first  # same buffers for the same shape
        assert len(engine._states) == 1 and fake_trt.executions.count((2, N, C)) == 16

        # Batch 3 lives in the second profile; batch 4 in none.
        z3 = denoise(engine, torch.ones(3, N, C, device="cuda"), torch.ones(3, N, C, device="cuda"), steps=1)
        torch.testing.assert_close(z3, torch.full((3, N, C), 0.5, device="cuda"))
        with pytest.raises(ValueError, match=r"z \(4, 4, 8\), cond \(4, 4, 8\) is outside every optimization profile"):
            denoise(engine, torch.ones(4, N, C, device="cuda"), torch.ones(4, N, C, device="cuda"), steps=1)
        # Back to batch 2: the context's shapes and addresses are restored.
        torch.testing.assert_close(denoise(engine, z0, cond), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_engine_logic_captures_and_replays_a_cuda_graph(tmp_path, fake_trt):
    path = write_fake_plan(tmp_path)
    z0, cond = torch.randn(2, N, C, device="cuda"), torch.randn(2, N, C, device="cuda")
    with TensorRTEngine(path, flavour="tensorrt") as engine:
        feeds = {"z": z0, "cond": cond, "t": torch.tensor([7], device="cuda")}
        assert engine.capture_graph(feeds), next(iter(engine._states.values())).graph_error
        runs = len(fake_trt.executions)
        z = denoise(engine, z0, cond)
        torch.cuda.synchronize()
        assert len(fake_trt.executions) == runs  # every step was a graph replay, no enqueue
        torch.testing.assert_close(z, reference(z0, cond))
        # Another shape in between, then the graph again.
        denoise(engine, torch.ones(1, N, C, device="cuda"), torch.ones(1, N, C, device="cuda"), steps=1)
        torch.testing.assert_close(denoise(engine, z0, cond), reference(z0, cond))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_engine_logic_with_cuda_graphs_captures_on_the_first_loop_and_only_replays_after(tmp_path, fake_trt):
    path = write_fake_plan(tmp_path)
    z0, cond = torch.randn(2, N, C, device="cuda"), torch.randn(2, N, C, device="cuda")
    with TensorRTEngine(path, flavour="tensorrt", cuda_graphs=True) as engine:
        torch.testing.assert_close(denoise(engine, z0, cond), reference(z0, cond))
        # The first step enqueues plainly and once more under capture; the other 7 replay.
        assert len(fake_trt.executions) == 2
        torch.testing.assert_close(denoise(engine, z0, cond), reference(z0, cond))
        assert len(fake_trt.executions) == 2
        assert next(iter(engine._states.values())).graph is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_engine_logic_refuses_a_plan_that_does_not_fit_the_contract(tmp_path, fake_trt):
    io = {"z": ["INPUT", "HALF", [-1, N, C]], "cond": ["INPUT", "FLOAT", [-1, N, C]], "t": ["INPUT", "INT64", [1]],
          "z_prev": ["OUTPUT", "FLOAT", [-1, N, C]]}
    with pytest.raises(EngineError, match="'z' is float16 in the plan, float32 expected"):
        TensorRTEngine(write_fake_plan(tmp_path / "a", io=io), flavour="tensorrt")
    io = {"z": ["INPUT", "FLOAT", [-1, N, C]], "cond": ["INPUT", "FLOAT", [-1, N, C]],
          "z_prev": ["OUTPUT", "FLOAT", [-1, N, C]]}
    with pytest.raises(EngineError, match=r"missing \['t'\]"):
        TensorRTEngine(write_fake_plan(tmp_path / "b", io=io), flavour="tensorrt")
    with pytest.raises(EngineError, match="could not deserialize"):
        TensorRTEngine(write_fake_plan(tmp_path / "c", unreadable=True), flavour="tensorrt")
    from engines.plan import PlanMismatch

    fake_trt.__version__ = "10.14.1.48"  # the plan says 10.13.0.35
    with pytest.raises(PlanMismatch, match="another TensorRT version"):
        TensorRTEngine(write_fake_plan(tmp_path / "d"), flavour="tensorrt")
