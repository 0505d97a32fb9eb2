"""The embedded model's CPU AOTInductor packages, built once per test session (slow: the C++
compilation of the three graphs with dynamic shapes takes minutes on a 2-core CPU)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class BuiltPackages:
    folder: Path
    results: list  # export.aoti_package.PackageResult, one per package
    seconds: float


@pytest.fixture(scope="session")
def embedded_cpu_packages(tmp_path_factory) -> BuiltPackages:
    import hidiff
    from export.aoti_package import build_aoti_packages

    folder = tmp_path_factory.mktemp("aoti-cpu")
    start = time.perf_counter()
    results = build_aoti_packages(hidiff.default_model(), folder, "cpu", log=print)
    seconds = time.perf_counter() - start
    print(f"embedded model, CPU FP32 AOTInductor packages: built in {seconds:.0f} s")
    return BuiltPackages(folder, results, seconds)
