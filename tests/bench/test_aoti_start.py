"""bench/aoti_start.py's refusal without packages; the aoti form's test is beside the CPU packages'
(tests/export/test_aoti_package.py), and bench/gpu_suite.sh's aoti step runs both forms on a GPU."""
from __future__ import annotations

from bench.aoti_start import main


def test_the_aoti_form_needs_a_folder(capsys):
    assert main(["--forms", "aoti", "--device", "cpu"]) == 2
    assert "needs --engines FOLDER" in capsys.readouterr().err
