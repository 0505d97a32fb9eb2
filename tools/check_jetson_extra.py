"""Check that ``pip install -e ".[jetson]"`` resolves on a Jetson with JetPack 6, from any machine.

    python tools/check_jetson_extra.py [--pyproject pyproject.toml] [--extra jetson]

1. read the base dependencies and the extra from pyproject.toml;
2. keep those whose environment markers hold on a Jetson (Linux, aarch64, Python 3.10, kernel
   release ``5.15.148-tegra``). pip evaluates markers against the machine it runs on, never
   against ``--platform``, so handing it the project itself would check x86's requirements;
3. resolve them with ``pip install --dry-run --ignore-installed --platform manylinux_2_X_aarch64
   ... --python-version 3.10 --only-binary=:all: --target TMP --report`` (binary wheels only:
   nothing is built or installed, only metadata is downloaded);
4. fail when pip cannot resolve them, when cuda-bindings is not 12.x (JetPack 6 ships CUDA 12.6,
   and cuda-bindings 13 needs a CUDA 13 driver), or when the resolution would install a package
   that JetPack or NVIDIA's Jetson index provides (torch, TensorRT, ONNX Runtime, OpenCV, or
   CUDA libraries from PyPI), which would shadow the JetPack one in a venv made with
   ``--system-site-packages``.

Exit status: 0 resolves (or the package index cannot be reached: says "skipped"), 1 it does not.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

# JetPack 6.x on an AGX Orin: what the markers see there (platform.release() is the L4T kernel's).
JETSON_MARKERS = {
    "implementation_name": "cpython",
    "implementation_version": "3.10.12",
    "os_name": "posix",
    "platform_machine": "aarch64",
    "platform_python_implementation": "CPython",
    "platform_release": "5.15.148-tegra",
    "platform_system": "Linux",
    "python_full_version": "3.10.12",
    "python_version": "3.10",
    "sys_platform": "linux",
}
PYTHON_VERSION = "3.10"
# Ubuntu 22.04 (JetPack 6) has glibc 2.35. pip 23 does not widen a manylinux_2_35 --platform to
# the older manylinux tags a wheel may carry, so every one is named.
PLATFORMS = [f"manylinux_2_{minor}_aarch64" for minor in range(35, 16, -1)] + ["manylinux2014_aarch64"]
# Distributions JetPack or NVIDIA's Jetson index provide: installing them from PyPI shadows those.
SHADOWING = re.compile(r"^(torch|torchvision|tensorrt.*|onnxruntime.*|opencv-.*|nvidia-.*)$")
CUDA_BINDINGS_MAJOR = 12
# What pip prints when the index cannot be reached at all (as opposed to "no matching version").
OFFLINE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
           "Network is unreachable", "ConnectTimeoutError", "ProxyError")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def jetson_requirements(pyproject: dict, extra: str) -> list[str]:
    """The base dependencies and ``extra``'s whose markers hold on a Jetson, markers removed."""
    extras = pyproject["project"].get("optional-dependencies", {})
    if extra not in extras:
        raise KeyError(f"pyproject.toml has no extra [{extra}]; it has {sorted(extras)}")
    kept = []
    for text in [*pyproject["project"]["dependencies"], *extras[extra]]:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({**JETSON_MARKERS, "extra": extra}):
            continue
        requirement.marker = None
        kept.append(str(requirement))
    return kept


def problems_with(installs: list[dict]) -> list[str]:
    """What is wrong with pip's resolution (its ``--report`` "install" list) for a Jetson."""
    versions = {normalize(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}
    found = []
    shadowing = sorted(name for name in versions if SHADOWING.match(name))
    if shadowing:
        found.append(f"it would install {', '.join(f'{n} {versions[n]}' for n in shadowing)}, which JetPack or "
                     "NVIDIA's Jetson index provides: remove them from the base dependencies or the extra "
                     "(or exclude them on Jetson with \"; 'tegra' not in platform_release\")")
    bindings = versions.get("cuda-bindings")
    if bindings is None:
        found.append("cuda-bindings is not in the resolution; the TensorRT backend needs it")
    elif int(bindings.split(".")[0]) != CUDA_BINDINGS_MAJOR:
        found.append(f"cuda-bindings resolves to {bindings}; JetPack 6 (CUDA 12.6) needs {CUDA_BINDINGS_MAJOR}.x")
    return found


def resolve(requirements: list[str]) -> tuple[int, list[dict], str]:
    """pip's dry-run resolution for aarch64 / Python 3.10: (exit status, installs, pip's output)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--disable-pip-version-check", "--retries", "1", "--timeout", "30",
                   *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
                   "--python-version", PYTHON_VERSION, "--only-binary=:all:", "--target", str(Path(tmp) / "target"),
                   "--report", str(report), *requirements]
        done = subprocess.run(command, capture_output=True, text=True)
        installs = json.loads(report.read_text())["install"] if done.returncode == 0 and report.is_file() else []
    return done.returncode, installs, done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    parser.add_argument("--extra", default="jetson")
    args = parser.parse_args(argv)
    requirements = jetson_requirements(tomllib.loads(args.pyproject.read_text(encoding="utf-8")), args.extra)
    code, installs, output = resolve(requirements)
    if code != 0:
        if any(marker in output for marker in OFFLINE):
            print(f"check_jetson_extra: skipped, the package index cannot be reached:\n{output[-1500:]}")
            return 0
        print(f"check_jetson_extra: [{args.extra}] does not resolve for aarch64 / Python {PYTHON_VERSION} "
              f"({' '.join(requirements)}):\n{output[-3000:]}", file=sys.stderr)
        return 1
    problems = problems_with(installs)
    if problems:
        print(f"check_jetson_extra: [{args.extra}] resolves, but " + "; ".join(problems), file=sys.stderr)
        return 1
    resolved = ", ".join(f"{item['metadata']['name']} {item['metadata']['version']}" for item in installs)
    print(f"check_jetson_extra: [{args.extra}] resolves for aarch64 / Python {PYTHON_VERSION}: {resolved}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
