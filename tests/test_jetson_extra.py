"""tools/check_jetson_extra.py, the CI check that ``pip install -e ".[jetson]"`` resolves on a
Jetson: its reading of pyproject.toml for a Jetson's markers, and its verdict on a resolution.
(CI runs the pip resolution itself; these tests need no network.)
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("check_jetson_extra", REPO / "tools" / "check_jetson_extra.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pyproject(tool) -> dict:
    return tool.tomllib.loads((REPO / "pyproject.toml").read_text())


def names(requirements: list[str]) -> set[str]:
    from packaging.requirements import Requirement

    return {Requirement(r).name for r in requirements}


def test_on_a_jetson_torch_and_opencv_come_from_nvidia_and_jetpack(tool, pyproject):
    requirements = tool.jetson_requirements(pyproject, "jetson")
    assert not names(requirements) & {"torch", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu"}
    assert {"numpy", "cuda-bindings", "onnx", "onnxscript", "polygraphy"} <= names(requirements)
    assert "cuda-bindings<13,>=12.6" in requirements and "numpy<2,>=1.24" in requirements
    assert not any(";" in r for r in requirements)  # markers evaluated here, not by pip


def test_elsewhere_the_base_dependencies_keep_torch_and_opencv(pyproject):
    from packaging.requirements import Requirement

    base = {Requirement(r).name: Requirement(r) for r in pyproject["project"]["dependencies"]}
    x86 = {"platform_machine": "x86_64", "platform_release": "6.8.0-45-generic", "python_version": "3.12"}
    assert base["torch"].marker.evaluate(x86) and base["opencv-python-headless"].marker.evaluate(x86)


def test_the_verdict_names_shadowing_packages_and_cuda_13_bindings(tool):
    def install(name: str, version: str) -> dict:
        return {"metadata": {"name": name, "version": version}}

    good = [install("numpy", "1.26.4"), install("cuda-bindings", "12.9.4"), install("onnx", "1.23.2")]
    assert tool.problems_with(good) == []
    bad = [install("numpy", "1.26.4"), install("cuda_bindings", "13.0.1"), install("opencv-python-headless", "4.10"),
           install("nvidia-cublas-cu12", "12.8.4.1")]
    shadow, bindings = tool.problems_with(bad)
    assert "nvidia-cublas-cu12 12.8.4.1, opencv-python-headless 4.10" in shadow
    assert bindings == "cuda-bindings resolves to 13.0.1; JetPack 6 (CUDA 12.6) needs 12.x"
    assert tool.problems_with([install("numpy", "1.26.4")]) == [
        "cuda-bindings is not in the resolution; the TensorRT backend needs it"]


def test_an_unknown_extra_is_named(tool, pyproject):
    with pytest.raises(KeyError, match=r"no extra \[jetsn\]"):
        tool.jetson_requirements(pyproject, "jetsn")
    assert sys.modules.get("check_jetson_extra") is None  # loaded from its path, not installed
