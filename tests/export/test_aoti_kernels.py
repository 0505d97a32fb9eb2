"""The fused Triton kernels compiled into CUDA AOTInductor packages (the export takes their packaged
forms): the small model's three graphs against the engines they were built from, and each kernel
alone (exported at one shape or with dynamic height and width, compiled as the CUDA FP16 packages
are) against its opaque op called directly, each run plainly, then as a CUDA graph, launching the
kernel and nothing else. Each case runs in a process of its own, since a
kernel that faults poisons the CUDA context of its process; the case's name and output say which
kernel, form and shape failed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CASE = """
import sys, tempfile, torch
from torch.export import Dim
from engines.aoti_backend import load_runner
from engines.registry import available_backends
from engines.cuda_graphs import ShapeGraphs
from engines.kernels.gated_dwconv import gated_dwconv3x3
from engines.kernels.head_gram import head_cosine
from engines.kernels.norm_matmul import conv1x1_residual, norm_conv1x1
from engines.kernels.prior_attention import prior_attention
from engines.contracts import Precision
from export.aoti_package import build_options

op, form = sys.argv[1], sys.argv[2]
dev = torch.device("cuda", 0)
torch.manual_seed(0)


def half(*shape, cl=False):
    t = torch.randn(*shape, device=dev, dtype=torch.float16)
    return t.contiguous(memory_format=torch.channels_last) if cl else t


c, hid, tokens = 48, 128, 16  # level 1 of the GoPro Restormer (tl.dot needs sides of 16 or more)
weights = {
    "norm_conv1x1": (half(c, 3 * c) * 0.1, half(3 * c)),
    "conv1x1_residual": (half(c, hid) * 0.1, half(c)),
    "gated_dwconv3x3": (half(2 * hid, 1, 3, 3) * 0.3, half(2 * hid)),
    "head_cosine": (),
    "prior_attention": (half(1, c, 2 * tokens) * 0.1, half(1, 2 * tokens).float(), half(1, 2 * tokens, c) * 0.1,
                        half(c)),
}[op]
# The one kernel each package launches (the cosine's epilogue adds inductor's kernels).
kernel = {"norm_conv1x1": "norm_matmul_kernel",
          "conv1x1_residual": "matmul_residual_kernel",
          "gated_dwconv3x3": "gated_dwconv3x3_kernel", "head_cosine": None,
          "prior_attention": "prior_attention_kernel"}[op]


class One(torch.nn.Module):
    def forward(self, x, residual=None):
        if op == "norm_conv1x1":
            return norm_conv1x1(x, weights[0], weights[1], 1e-5)
        if op == "conv1x1_residual":
            return conv1x1_residual(x, weights[0], weights[1], residual)
        if op == "gated_dwconv3x3":
            return gated_dwconv3x3(x, weights[0], weights[1])
        if op == "head_cosine":
            return head_cosine(x.flatten(2)[:, : 2 * c], 2)
        return prior_attention(x, *weights[:3], weights[3], tokens, 1e-5)


channels = {"norm_conv1x1": c, "conv1x1_residual": hid, "gated_dwconv3x3": 2 * hid, "head_cosine": 3 * c,
            "prior_attention": c}[op]


def inputs(h, w):
    x = half(1, channels, h, w, cl=True)
    return (x, half(1, c, h, w, cl=True)) if op == "conv1x1_residual" else (x,)


dynamic = form.startswith("dynamic")
hw = {2: 8 * Dim("h8", min=1, max=512), 3: 8 * Dim("w8", min=1, max=512)}
shapes = ((hw, hw) if op == "conv1x1_residual" else (hw,)) if dynamic else None
with torch.no_grad():
    program = torch.export.export(One(), inputs(40, 56), dynamic_shapes=shapes, strict=False)
    print("exported", flush=True)
    path = tempfile.mkdtemp() + "/one.pt2"
    # Compiled as export/build_engines.py compiles the CUDA FP16 packages.
    torch._inductor.aoti_compile_and_package(program, package_path=path,
                                             inductor_configs=build_options(dev, Precision.FP16, True)["inductor"])
    print("compiled", flush=True)
# Opened as Deblurrer opens packages: after the registry's availability check (opened without it,
# torch's loader crashed on an H100: tests/engines/test_aoti_backend.py tells the two apart).
available_backends(dev)
runner = load_runner(__import__("pathlib").Path(path), dev)
print("loaded", flush=True)


def call(*t):
    out = runner(*t)
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


graphs = ShapeGraphs(call, dev, "one")
for h, w in ((40, 56),) + (((24, 80), (64, 32)) if dynamic else ()):
    t = inputs(h, w)
    want = One()(*t)
    for name, run in (("plain", call), ("cuda graph", graphs)):
        for _ in range(3):
            got = run(*t)[0]
            torch.cuda.synchronize()
            torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)
        print("ran", (h, w), name, flush=True)
    assert graphs.error is None, graphs.error
# What the package launches: only the kernel (no fill of its output, no copies around it); the
# inputs are made before the profiler starts (their random fill and layout copy are no launch of it).
t = inputs(40, 56)
torch.cuda.synchronize()
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
    call(*t)
    torch.cuda.synchronize()
launched = sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})
print("launched", launched, flush=True)
assert kernel is None or (launched and all(name.startswith(kernel) for name in launched)), launched
print("ok", sys.argv[1], form)
"""

GRAPHS = """
import sys, tempfile, torch
sys.path.insert(0, "tests/engines")
from engine_artifacts import sample_feeds, tiny_model
from engines.aoti_backend import aoti_engines
from engines.registry import available_backends
from engines.torch_backend import torch_engines
from engines.torch_settings import TorchSettings
from export.aoti_package import build_aoti_packages

folder = tempfile.mkdtemp()
build_aoti_packages(tiny_model(), folder, "cuda", "fp16", shapes=[(2, 32, 48)], fuse_kernels=True, log=print)
# The kernels are compiled in: no package calls a project op through the proxy executor.
for manifest in __import__("pathlib").Path(folder).glob("*.pt2.json"):
    assert __import__("json").loads(manifest.read_text())["custom_ops"] == [], manifest.name
dev = torch.device("cuda", 0)
available_backends(dev)  # as Deblurrer does before it opens packages
fused = TorchSettings(channels_last=True, pad_channels=True, fuse_gdfn_gate=True, fuse_block_norms=True,
                      fuse_prior_attention=True)
reference = torch_engines(tiny_model(), dev, "fp16", fused)
for cuda_graphs in (False, True):
    packaged = aoti_engines(folder, dev, cuda_graphs=cuda_graphs)
    for shape in ((2, 3, 32, 48), (1, 3, 40, 24)):  # the per-shape package, then the dynamic one
        feeds = {graph: {k: v.to(dev) for k, v in f.items()} for graph, f in sample_feeds(shape=shape).items()}
        for graph, engine in packaged.items():
            want = reference[graph].infer(feeds[graph])
            for _ in range(3):
                got = engine.infer(feeds[graph])
                torch.cuda.synchronize()
                for key in want:
                    torch.testing.assert_close(got[key], want[key], rtol=2e-2, atol=2e-2)
            print("ran", graph, shape, "cuda graphs" if cuda_graphs else "plain", flush=True)
print("ok graphs")
"""

OPS = ("norm_conv1x1", "conv1x1_residual", "gated_dwconv3x3", "head_cosine", "prior_attention")
FORMS = ("static", "dynamic")


def _case_env() -> dict[str, str]:
    """The environment of a case's process: the repository importable, and a crash that prints the
    Python stack of each thread."""
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "PYTHONFAULTHANDLER": "1"}


def _run_case(name: str, args: list[str], timeout: int) -> subprocess.CompletedProcess:
    """Run a case's script in a process of its own. Where HIDIFF_CASE_LOG names a file
    (bench/gpu_suite.sh sets it), the case's whole output is appended to it as the case ends (one
    write, so that concurrent test workers do not interleave), so that a run cut off before pytest
    reports still says how each finished case went."""
    done = subprocess.run([sys.executable, "-c", *args], cwd=REPO, env=_case_env(), capture_output=True, text=True,
                          timeout=timeout)
    if os.environ.get("HIDIFF_CASE_LOG"):
        log = Path(os.environ["HIDIFF_CASE_LOG"])
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as file:
            file.write(f"=== {name}: exit {done.returncode}\n{done.stdout}\n{done.stderr}\n")
    return done


@pytest.mark.gpu
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("op", OPS)
def test_a_package_runs_the_kernel_as_calling_it_does(op, form):
    done = _run_case(f"{op}-{form}", [CASE, op, form], timeout=900)
    assert done.returncode == 0 and f"ok {op} {form}" in done.stdout, done.stdout + done.stderr[-3000:]


@pytest.mark.gpu
def test_packages_with_the_fused_kernels_match_the_engines_they_were_built_from():
    done = _run_case("graphs", [GRAPHS], timeout=1200)
    assert done.returncode == 0 and "ok graphs" in done.stdout, done.stdout + done.stderr[-3000:]
