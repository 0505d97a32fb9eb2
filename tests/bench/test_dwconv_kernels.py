"""bench/dwconv_kernels.py on the CPU: the shapes a frame runs and the table (the timings need a GPU)."""
from __future__ import annotations

from conftest import tiny_config

from bench.dwconv_kernels import frame_shapes, markdown
from bench.inputs import ImageSize
from hidiff.config import preset
from hidiff.restormer import GDFN


def test_frame_shapes_count_every_gdfn_at_its_padded_width():
    shapes = frame_shapes(preset("gopro"), ImageSize.parse("320x180"), "cpu")
    config = preset("gopro").network_g
    blocks = sum(config.num_blocks) + sum(config.num_blocks[:3]) + config.num_refinement_blocks
    assert sum(shapes.values()) == blocks == 38
    # hidden 127 at level 1 (dim 48) padded to 128; the frame padded from 180 to 184 rows.
    assert shapes[(256, 184, 320)] == config.num_blocks[0]
    assert shapes[(2048, 23, 40)] == config.num_blocks[3]
    assert all(c % 8 == 0 for c, _, _ in shapes)


def test_tiny_model_shapes_match_its_gdfns():
    from hidiff.model import HIDiff

    shapes = frame_shapes(tiny_config(), ImageSize.parse("64x40"), "cpu")
    assert sum(shapes.values()) == sum(isinstance(m, GDFN) for m in HIDiff(tiny_config()).restormer.modules())


def test_markdown_totals_weight_by_calls():
    rows = [{"channels_in": 256, "height": 8, "width": 8, "calls_per_frame": 3, "cudnn_ms": 1.0, "fused_ms": 0.5,
             "fused_GB_per_s": 100.0, "fused_max_abs_err": 1e-3, "fused_config": "PAIRS: 4, num_ctas: 1"},
            {"channels_in": 512, "height": 4, "width": 4, "calls_per_frame": 2, "cudnn_ms": 2.0, "fused_ms": 0.25,
             "fused_GB_per_s": 100.0, "fused_max_abs_err": 1e-3, "fused_config": "PAIRS: 8, num_ctas: 1"}]
    table = markdown(rows, "title")
    assert "| **per frame** | | 5 | **7.00** | **2.00** |" in table
    assert "| PAIRS: 4 |" in table
