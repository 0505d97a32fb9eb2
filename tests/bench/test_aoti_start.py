"""bench/aoti_start.py's refusal without packages and its dynamic-only folder; the aoti form's test is beside the CPU packages'
(tests/export/test_aoti_package.py), and bench/gpu_suite.sh's aoti step runs both forms on a GPU."""
from __future__ import annotations

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
