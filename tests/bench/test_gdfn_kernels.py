"""bench/gdfn_kernels.py on the CPU: the blocks a frame runs and the table (the timings need a GPU)."""
from __future__ import annotations

from bench.gdfn_kernels import frame_blocks, markdown
from bench.inputs import ImageSize
from engines.kernels.fuse import FusedGateGDFN
from hidiff.config import preset


def test_frame_blocks_count_every_unmodulated_block():
    shapes, blocks = frame_blocks(preset("gopro"), ImageSize.parse("320x180"), "cpu")
    config = preset("gopro").network_g
    # encoder levels 1-3, decoder levels 3-1 and the refinement; the bottleneck's blocks are modulated
    unmodulated = 2 * sum(config.num_blocks[:3]) + config.num_refinement_blocks
    assert sum(shapes.values()) == unmodulated == 32
    assert shapes[(48, 184, 320)] == config.num_blocks[0]  # the frame padded from 180 to 184 rows
    assert shapes[(96, 184, 320)] == config.num_blocks[0] + config.num_refinement_blocks  # decoder level 1, refinement
    assert set(blocks) == set(shapes) and all(not b.attn.modulated for b in blocks.values())
    assert all(isinstance(b.ffn, FusedGateGDFN) for b in blocks.values())  # the per-operation form's gate kernel


def test_markdown_totals_weight_by_calls():
    rows = [{"channels": 48, "hidden": 128, "height": 8, "width": 8, "calls_per_frame": 3, "per_op_ms": 1.0,
             "whole_ms": 0.5, "whole_GB_per_s": 100.0, "per_op_max_abs_err": 1e-3, "whole_max_abs_err": 2e-3,
             "whole_config": "TH: 8, num_ctas: 1"},
            {"channels": 96, "hidden": 256, "height": 4, "width": 4, "calls_per_frame": 2, "per_op_ms": 2.0,
             "whole_ms": 0.25, "whole_GB_per_s": 100.0, "per_op_max_abs_err": 1e-3, "whole_max_abs_err": 2e-3,
             "whole_config": "TH: 4, num_ctas: 1"}]
    table = markdown(rows, "title")
    assert "| **per frame** | | | 5 | **7.00** | **2.00** |" in table
    assert "| TH: 8 |" in table
