"""engines.aoti_backend without compiling anything: manifests, the refusal of missing, foreign,
corrupt and mismatched packages by name, the folder checks of aoti_engines, and the backend's
place in engines.registry and in runtime.selection's "auto" order.

The packages here are small zip archives with a manifest written by PackageManifest.describe:
the checks read bytes and manifests, never the compiled code. Packages that really run are built
by tests/export/test_aoti_package.py (CPU) and the GPU tests at the end of this file.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_artifacts import sample_feeds, tiny_model

from engines import registry
from engines.aoti_backend import (
    CorruptPackage,
    PackageManifest,
    PackageMismatch,
    PackageRequirements,
    aoti_engines,
    check_package,
    default_precision,
    manifest_path,
    needs_rebuild,
    package_name,
    target_facts,
)
from engines.contracts import graph_contracts
from runtime.selection import artifact_precision, candidates

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[2]


def write_package(folder: Path, graph: str = "restormer", device: str = "cpu", precision: str = "fp32",
                  shape: tuple[int, int, int] | None = None, **fields: Any) -> Path:
    """A zip archive named and described like a built package (its manifest says what ``fields`` say)."""
    path = folder / package_name(graph, device, precision, shape)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data/aotinductor/model/model.so", b"not machine code: only the checks read this")
    target = {**target_facts(CPU), "device": device}
    manifest = PackageManifest.describe(
        path, **{"graph": graph, "device": device, "precision": precision, "shape": shape,
                 "dynamic": {} if shape else {"batch": [1, 64], "height": [8, 8192], "width": [8, 8192]},
                 "source_sha256": "a" * 64, "options": {"channels_last": False}, "target": target,
                 "contract": graph_contracts()[graph].as_dict(), "model": {}, **fields})
    manifest.write(manifest_path(path))
    return path


def here(**fields: Any) -> PackageRequirements:
    return PackageRequirements(**{"graph": "restormer", "device": "cpu", "precision": "fp32",
                                  "target": target_facts(CPU), **fields})


def test_a_manifest_survives_its_json(tmp_path):
    path = write_package(tmp_path, shape=(1, 64, 96), custom_ops=("hidiff::gated_dwconv3x3",))
    manifest = PackageManifest.read(manifest_path(path))
    assert PackageManifest.from_dict(json.loads(json.dumps(manifest.as_dict()))) == manifest
    assert manifest.shape == (1, 64, 96) and manifest.custom_ops == ("hidiff::gated_dwconv3x3",)
    assert check_package(path, here()) == manifest


def test_coverage_of_dynamic_and_per_shape_packages(tmp_path):
    dynamic = PackageManifest.read(manifest_path(write_package(tmp_path)))
    one = PackageManifest.read(manifest_path(write_package(tmp_path, shape=(1, 64, 96))))
    assert dynamic.covers({"batch": 1, "height": 64, "width": 96, "tokens": 16})
    assert not dynamic.covers({"batch": 65, "height": 64, "width": 96})
    assert one.covers({"batch": 1, "height": 64, "width": 96}) and not one.covers({"batch": 2, "height": 64, "width": 96})


@pytest.mark.parametrize("damage, reason", [
    ("delete", "missing package"),
    ("no manifest", "missing manifest"),
    ("foreign, no manifest", "foreign"),
    ("overwritten", "foreign"),
    ("bad manifest", "unreadable manifest"),
    ("truncated", "truncated"),
    ("flipped byte", "corrupt"),
])
def test_a_damaged_package_is_refused_by_name(tmp_path, damage, reason):
    path = write_package(tmp_path)
    data = path.read_bytes()
    if damage == "delete":
        path.unlink()
    elif damage == "no manifest":
        manifest_path(path).unlink()
    elif damage == "foreign, no manifest":
        manifest_path(path).unlink()
        path.write_bytes(b"\x80\x04 a pickle, not a package")
    elif damage == "overwritten":
        path.write_bytes(b"\x08\x07" + data[2:])
    elif damage == "bad manifest":
        manifest_path(path).write_text("{not json", encoding="utf-8")
    elif damage == "truncated":
        path.write_bytes(data[:-10])
    else:
        path.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    with pytest.raises(CorruptPackage) as info:
        check_package(path, here())
    assert info.value.reason == reason and str(path) in str(info.value)
    assert needs_rebuild(path, here()).startswith(reason)


@pytest.mark.parametrize("facts, reason", [
    ({"torch": "2.0.0"}, "another torch version"),
    ({"machine": "aarch64"}, "another CPU"),
    ({"cpu_capability": "AVX512"}, "another CPU"),  # built with wider vector instructions than this CPU has
])
def test_a_package_for_another_machine_is_refused(tmp_path, facts, reason):
    path = write_package(tmp_path, target={**target_facts(CPU), **facts})
    with pytest.raises(PackageMismatch) as info:
        check_package(path, here())
    assert info.value.reasons == (reason,)
    assert "Rebuild it with python export/build_engines.py" in str(info.value)


def test_narrower_vector_instructions_run_on_a_wider_cpu(tmp_path):
    path = write_package(tmp_path, target={**target_facts(CPU), "cpu_capability": "DEFAULT"})
    wider = PackageRequirements(target={**target_facts(CPU), "cpu_capability": "AVX512"})
    assert needs_rebuild(path, wider) is None


def test_a_cuda_package_names_the_gpu_it_was_built_for(tmp_path):
    gpu = {**target_facts(CPU), "device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]}
    path = write_package(tmp_path, device="cuda", precision="fp16", target=gpu)
    other = {**gpu, "gpu_name": "NVIDIA A100-SXM4-80GB", "compute_capability": [8, 0]}
    with pytest.raises(PackageMismatch) as info:
        check_package(path, PackageRequirements(device="cuda", target=other))
    assert info.value.reasons == ("another GPU", "another GPU")
    assert "NVIDIA H100 80GB HBM3" in str(info.value) and "NVIDIA A100-SXM4-80GB" in str(info.value)


def test_a_stale_package_says_what_changed(tmp_path):
    path = write_package(tmp_path)
    why = needs_rebuild(path, here(source_sha256="b" * 64, options={"channels_last": True}, precision="fp16"))
    assert why is not None
    assert [part.split(":")[0] for part in why.split("; ")] == ["precision changed", "source graph changed",
                                                                  "options changed"]


def test_a_folder_without_packages_for_the_device_names_what_is_missing(tmp_path):
    write_package(tmp_path, graph="restormer", device="cuda", precision="fp16")
    with pytest.raises(FileNotFoundError, match=r"no dynamic cpu fp32 AOTInductor package for \['le_dm', "
                                                r"'denoise_step', 'restormer'\].*le_dm\.cpu-fp32\.pt2"):
        aoti_engines(tmp_path, "cpu")


def test_packages_of_two_models_are_not_mixed(tmp_path):
    write_package(tmp_path, graph="le_dm")
    write_package(tmp_path, graph="denoise_step")
    write_package(tmp_path, graph="restormer", source_sha256="b" * 64)
    with pytest.raises(PackageMismatch) as info:
        aoti_engines(tmp_path, "cpu")
    assert info.value.reason == "mixed sources"


def test_a_corrupt_package_stops_the_folder_from_opening(tmp_path):
    for graph in ("le_dm", "denoise_step", "restormer"):
        write_package(tmp_path, graph=graph)
    damaged = tmp_path / package_name("denoise_step", "cpu", "fp32")
    damaged.write_bytes(damaged.read_bytes()[:-1])
    with pytest.raises(CorruptPackage, match="denoise_step.cpu-fp32.pt2 is truncated"):
        aoti_engines(tmp_path, "cpu")


def test_the_registry_knows_the_backend_and_when_it_has_no_packages(tmp_path):
    assert registry.available_backends("cpu", tmp_path)["aoti"] == f"no *.pt2 in {tmp_path}"
    write_package(tmp_path)
    assert registry.available_backends("cpu", tmp_path)["aoti"] is None
    with pytest.raises(ValueError, match="backend 'aoti' runs AOTInductor packages"):
        registry.open_engines("aoti", device="cpu")


def test_auto_takes_packages_after_plans_and_before_onnx_runtime(tmp_path):
    (tmp_path / "restormer.plan").write_bytes(b"")
    (tmp_path / "restormer.onnx").write_bytes(b"")
    write_package(tmp_path, device="cuda", precision="fp16")
    order = candidates(torch.device("cuda", 0), tmp_path, model_given=False)
    assert [(c.backend, c.device.type, c.expected) for c in order] == [
        ("tensorrt", "cuda", True), ("aoti", "cuda", True), ("onnxruntime-cuda", "cuda", True),
        ("torch", "cuda", False), ("aoti", "cpu", False), ("onnxruntime-cpu", "cpu", True), ("torch", "cpu", False)]
    write_package(tmp_path, device="cpu")
    assert [c.backend for c in candidates(CPU, tmp_path, model_given=False) if c.expected][0] == "aoti"


def test_auto_precision_prefers_the_cuda_fp16_packages(tmp_path):
    write_package(tmp_path, device="cpu", precision="fp32")
    assert artifact_precision("aoti", tmp_path, torch.device("cuda", 0)) == "fp32"
    write_package(tmp_path, device="cuda", precision="fp16")
    assert artifact_precision("aoti", tmp_path, torch.device("cuda", 0)) == "fp16"
    assert default_precision(tmp_path, "cpu").value == "fp32"


# ------------------------------------------------------------------------------------------ on a GPU


@pytest.fixture(scope="module")
def cuda_packages(tmp_path_factory):
    from export.aoti_package import build_aoti_packages

    folder = tmp_path_factory.mktemp("aoti-cuda")
    build_aoti_packages(tiny_model(), folder, "cuda", "fp16", shapes=[(2, 32, 48)], fuse_kernels=True,
                        log=print)
    return folder


@pytest.mark.gpu
def test_cuda_packages_run_as_cuda_graphs_and_match_the_torch_engines(cuda_packages):
    from engines.torch_backend import torch_engines

    registry.available_backends("cuda:0")  # as Deblurrer does first (test_cuda_packages_open_and_run_in_a_new_process)
    packaged = aoti_engines(cuda_packages, "cuda:0")
    reference = torch_engines(tiny_model(), "cuda:0", "fp16")
    for shape in ((2, 3, 32, 48), (1, 3, 40, 24)):  # the per-shape package, then the dynamic one
        feeds = {graph: {k: v.cuda() for k, v in f.items()} for graph, f in sample_feeds(shape=shape).items()}
        for graph, engine in packaged.items():
            want = reference[graph].infer(feeds[graph])
            for _ in range(3):
                got = engine.infer(feeds[graph])
                for key in want:
                    torch.testing.assert_close(got[key], want[key], rtol=2e-2, atol=2e-2)
            assert engine.cuda_graph_error is None, engine.cuda_graph_error
    assert packaged["restormer"].package_for({"batch": 2, "height": 32, "width": 48}).name == \
        "restormer.cuda-fp16.2x32x48.pt2"


# What a new process does before it opens the packages: nothing, or what Deblurrer does first
# (runtime.selection asks engines.registry which backends the device has: that imports, among
# others, onnxruntime and torch._inductor).
OPEN_IN_A_NEW_PROCESS = {
    "directly": "",
    "after the registry's availability check": "registry.available_backends('cuda:0')",
}


@pytest.mark.gpu
@pytest.mark.parametrize("before", sorted(OPEN_IN_A_NEW_PROCESS))
def test_cuda_packages_open_and_run_in_a_new_process(cuda_packages, before):
    """In a process of its own (a crash in torch's loader ends only it, and its stack is shown)."""
    script = f"""
import sys, torch
sys.path.insert(0, "tests/engines")
from engine_artifacts import sample_feeds
from engines import registry
from engines.aoti_backend import aoti_engines
{OPEN_IN_A_NEW_PROCESS[before]}
opened = aoti_engines(sys.argv[1], "cuda:0")
feeds = {{graph: {{k: v.cuda() for k, v in f.items()}} for graph, f in sample_feeds(shape=(2, 3, 32, 48)).items()}}
for graph, engine in opened.items():
    out = engine.infer(feeds[graph])
    torch.cuda.synchronize()
    assert all(torch.isfinite(t).all() for t in out.values()), graph
print("ran", sorted(opened))
"""
    done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", script, str(cuda_packages)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if os.environ.get("HIDIFF_CASE_LOG"):  # gpu_suite.sh's log, kept where a run is cut off before pytest reports
        with open(os.environ["HIDIFF_CASE_LOG"], "a") as log:
            log.write(f"=== packages opened {before}: exit {done.returncode}\n{done.stdout}\n{done.stderr}\n")
    assert done.returncode == 0 and "ran ['denoise_step', 'le_dm', 'restormer']" in done.stdout, \
        f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"


@pytest.mark.gpu
def test_cuda_packages_give_the_first_frame_the_hundredth_frames_output(cuda_packages):
    from runtime.deblurrer import Deblurrer

    frame = (torch.rand(45, 61, 3, generator=torch.Generator().manual_seed(5)) * 255).to(torch.uint8).numpy()
    with Deblurrer(engines=cuda_packages, device=0, strict=True) as deblurrer:
        assert deblurrer.backend == "aoti" and "AOTInductor packages" in deblurrer.backend_reason
        first = deblurrer.deblur(frame)
        later = [deblurrer.deblur(frame) for _ in range(99)]
        assert deblurrer.pipeline.loop.graph_error is None
    assert all((out == first).all() for out in later)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_the_kernel_modules_register_every_op_a_package_may_call():
    """A package with the fused kernels calls them through AOTInductor's proxy executor: the
    backend imports KERNEL_MODULES to register them, and every one of the project's ops is there."""
    from engines import aoti_backend

    for module in aoti_backend.KERNEL_MODULES:
        importlib.import_module(module)
    kernels = Path(aoti_backend.__file__).parent / "kernels"
    declared = {line.split('"hidiff::')[1].split('"')[0] for path in kernels.glob("*.py")
                for line in path.read_text().splitlines() if 'custom_op("hidiff::' in line}
    assert declared >= {"gated_dwconv3x3", "norm_conv1x1", "conv1x1_residual", "head_gram_partials", "prior_attention",
                        "gdfn_block", "mdta_gram_partials", "mdta_apply"}
    assert all(hasattr(torch.ops.hidiff, name) for name in declared), declared
