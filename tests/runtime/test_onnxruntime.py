"""The runtime over ONNX Runtime on the CPU: "auto" picks it for an artifacts folder of ONNX graphs,
and the result equals the PyTorch model's for the same z_T.

The graphs come from tests/engines/engine_artifacts.py (the tiny random model exported with
static shapes (2, 3, 32, 48), once per test session), so frames here have exactly that shape."""
from __future__ import annotations

import pytest
import torch

from runtime import BackendError, Deblurrer

try:  # shared with tests/engines when the whole suite runs: one export per session
    import engine_artifacts
except ImportError:
    from tests.engines import engine_artifacts

pytest.importorskip("onnxruntime")
# Exporting the graphs takes ~35 s of this 2-core CPU unless tests/engines already did it this session.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory):
    return engine_artifacts.exported_folder(tmp_path_factory.getbasetemp())


def test_auto_picks_onnxruntime_cpu_and_matches_the_model(onnx_folder):
    batch, _, height, width = engine_artifacts.SHAPE
    with Deblurrer(engines=onnx_folder, device="cpu") as d:
        assert d.backend == "onnxruntime-cpu", d.backend_reason
        assert "ONNX graphs in" in d.backend_reason and "plain loop" in d.describe()
        blur = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(3))
        got = d.deblur_tensor(blur)
        with torch.no_grad():
            expected = engine_artifacts.tiny_model()(blur, noise=d.noise.expand(batch, -1, -1)).clamp(0, 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=engine_artifacts.TOLERANCE)


def test_strict_auto_refuses_to_fall_back_past_broken_graphs(onnx_folder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in onnx_folder.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "restormer.onnx").write_bytes(b"damaged")  # the manifest's sha256 no longer matches
    with pytest.raises(BackendError, match="strict=True"):
        Deblurrer(engines=broken, device="cpu", model=engine_artifacts.tiny_model(), strict=True)
    with Deblurrer(engines=broken, device="cpu", model=engine_artifacts.tiny_model()) as d:
        assert d.backend == "torch" and "fell back from onnxruntime-cpu" in d.backend_reason
