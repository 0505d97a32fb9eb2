"""bench/aoti_start.py's refusals, its dynamic-only folder and (on a GPU) a form's kernel profile; the aoti
form's test is beside the CPU packages' (tests/export/test_aoti_package.py), and bench/gpu_suite.sh's aoti
step runs both forms on a GPU."""
from __future__ import annotations

import json
import re

import pytest
import torch

from bench.aoti_start import main


def test_the_aoti_form_needs_a_folder(capsys):
    assert main(["--forms", "aoti", "--device", "cpu"]) == 2
    assert "need --engines FOLDER" in capsys.readouterr().err


def test_the_dynamic_form_sees_only_the_dynamic_packages(tmp_path):
    from bench.aoti_start import dynamic_packages

    built = tmp_path / "built"
    built.mkdir()
    for name in ("restormer.cuda-fp16.pt2", "restormer.cuda-fp16.1x720x1280.pt2", "le_dm.cuda-fp16.pt2"):
        (built / name).write_bytes(name.encode())
        (built / (name + ".json")).write_text("{}")
    linked = dynamic_packages(built, tmp_path)
    assert sorted(p.name for p in linked.iterdir() if p.is_symlink()) == [
        "le_dm.cuda-fp16.pt2", "le_dm.cuda-fp16.pt2.json", "restormer.cuda-fp16.pt2", "restormer.cuda-fp16.pt2.json"]
    assert (linked / "restormer.cuda-fp16.pt2").read_bytes() == b"restormer.cuda-fp16.pt2"


def test_profiling_needs_a_cuda_device(capsys, tmp_path):
    assert main(["--forms", "jit", "--device", "cpu", "--tiny", "--profile", str(tmp_path)]) == 2
    assert "--profile times CUDA kernels" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_forms_profile_says_where_its_gpu_time_goes(tmp_path, capsys):
    assert main(["--forms", "jit", "--device", "cuda:0", "--tiny", "--sizes", "64x48", "--frames", "1",
                 "--profile", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(next(line for line in printed.splitlines() if line.startswith('{"form": "jit"')))
    kinds = (tmp_path / "kinds_jit_64x48.md").read_text()
    total = float(re.search(r"\*\*all kernels\*\* \| \d+ \| [0-9.]+ \| \*\*([0-9.]+)\*\*", kinds).group(1))
    assert total > 0 and result["sizes"]["64x48"]["kernel_ms"] == pytest.approx(total, abs=0.01), (kinds, result)
    assert kinds in printed and "inductor's generated kernels" in kinds
    assert (tmp_path / "kernels_jit_64x48.txt").read_text().startswith("jit 64x48, 2 runs, ")
