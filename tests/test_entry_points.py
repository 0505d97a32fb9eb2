"""The commands as a user starts them once the project is installed (``pip install -e .``): the
benchmark run as a file and as a module, each in a fresh interpreter with this checkout importable
as the editable install makes it (the scripts fix no sys.path themselves), and every command's
``--version``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engines.version import project_version

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], cwd=REPO / "tests", env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("command", [[str(REPO / "bench" / "latency.py"), "--help"], ["-m", "bench.latency", "--help"]])
def test_the_benchmark_starts_as_a_file_and_as_a_module(command: list[str]) -> None:
    done = run(*command)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: hidiff-bench") and "--no-memory-check" in done.stdout


def _parsers() -> dict[str, object]:
    from bench.latency import _parse_args
    from export.adopt_plan import build_parser as adopt_parser
    from export.build_engines import build_parser as build_parser
    from runtime.__main__ import build_parser as runtime_parser

    return {"python -m runtime": runtime_parser().parse_args, "hidiff-bench": _parse_args,
            "hidiff-build-engines": build_parser().parse_args, "hidiff-adopt-plan": adopt_parser().parse_args}


@pytest.mark.parametrize("prog", ["python -m runtime", "hidiff-bench", "hidiff-build-engines", "hidiff-adopt-plan"])
def test_version(prog: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parsers()[prog](["--version"])  # type: ignore[operator]
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} (hidiff-deploy) {project_version()}"
