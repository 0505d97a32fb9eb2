"""The installed project's version, for every command's ``--version``.

Read from the package metadata that ``pip install`` writes, so the number is pyproject.toml's;
a checkout used without installing it says so instead of guessing.
"""
from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "hidiff-deploy"


def project_version() -> str:
    """``"0.1.0"``, or a note that the project is not installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return f"unknown ({DISTRIBUTION} is not installed: pip install -e .)"


def version_text(prog: str) -> str:
    """What ``PROG --version`` prints: the command, the project and its version."""
    return f"{prog} ({DISTRIBUTION}) {project_version()}"
