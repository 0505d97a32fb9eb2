"""export.progress: the elapsed-time line of a long step, on stderr, and nothing when disabled."""
from __future__ import annotations

import time

import pytest

from export.progress import Heartbeat


def test_the_line_names_the_step_while_it_runs(capsys: pytest.CaptureFixture) -> None:
    with Heartbeat("restormer: building"):
        time.sleep(1.3)  # at least one refresh
    err = capsys.readouterr().err
    assert "restormer: building: 00:0" in err


def test_a_disabled_heartbeat_prints_nothing(capsys: pytest.CaptureFixture) -> None:
    with Heartbeat("restormer: building", enabled=False):
        time.sleep(1.1)
    assert capsys.readouterr().err == ""
