"""bench/norm_matmul_kernels.py on the CPU: the sites a frame runs and the table (the timings need a GPU)."""
from __future__ import annotations

from bench.inputs import ImageSize
from bench.norm_matmul_kernels import frame_sites, markdown, moved_bytes
from hidiff.config import preset


def test_frame_sites_count_five_per_block_without_the_prior():
    sites = frame_sites(preset("gopro"), ImageSize.parse("320x180"), "meta")
    config = preset("gopro").network_g
    # every block but the bottleneck's: the encoder's and decoder's levels 1-3 and the refinement
    blocks = 2 * sum(config.num_blocks[:3]) + config.num_refinement_blocks
    assert sum(sites.values()) == 5 * blocks == 5 * 32
    rows = 184 * 320  # the frame padded from 180 to 184 rows
    # level 1: LN1 -> qkv (48 -> 144), LN2 -> project_in (48 -> 2 x 128 padded), 3 encoder blocks
    assert sites[("norm", 1, rows, 48, 144)] == config.num_blocks[0]
    assert sites[("norm", 1, rows, 48, 256)] == config.num_blocks[0]
    assert sites[("mixing", 1, rows, 48, 48)] == config.num_blocks[0]
    assert sites[("residual", 1, rows, 128, 48)] == config.num_blocks[0]
    # decoder level 1 and the refinement run at 96 channels, full resolution
    assert sites[("residual", 1, rows, 256, 96)] == config.num_blocks[0] + config.num_refinement_blocks
    # MDTA's cosines, the N slot holding the heads: one head of 48 channels at level 1, of 96 in the
    # decoder's level 1 and the refinement; two heads of 48 at level 2 (encoder and decoder)
    assert sites[("gram", 1, rows, 48, 1)] == config.num_blocks[0]
    assert sites[("gram", 1, rows, 96, 1)] == config.num_blocks[0] + config.num_refinement_blocks
    assert sites[("gram", 1, rows // 4, 96, 2)] == 2 * config.num_blocks[1]
    assert sum(n for site, n in sites.items() if site[0] == "gram") == blocks


def test_moved_bytes_and_markdown_totals():
    assert moved_bytes(("norm", 1, 10, 48, 144)) == 2 * 10 * (48 + 144)
    assert moved_bytes(("residual", 2, 10, 128, 48)) == 2 * 2 * 10 * (128 + 48 + 48)
    # q and k (2 x 96 float16 channels) read once, two heads' (48 x 48) float32 cosines written
    assert moved_bytes(("gram", 2, 10, 96, 2)) == 2 * (2 * 10 * 2 * 96 + 4 * 2 * 48 * 48)
    rows = [{"kind": "norm", "images": 1, "rows": 64, "K": 48, "N": 144, "calls_per_frame": 3, "unfused_ms": 1.0,
             "product_ms": 0.5, "fused_ms": 0.75, "fused_GB_per_s": 10.0, "fused_max_abs_err": 1e-3,
             "fused_config": "BLOCK_M: 64"},
            {"kind": "mixing", "images": 1, "rows": 16, "K": 96, "N": 96, "calls_per_frame": 2, "unfused_ms": 2.0,
             "product_ms": 1.0, "fused_ms": 1.5, "fused_GB_per_s": 10.0, "fused_max_abs_err": 1e-3,
             "fused_config": "BLOCK_M: 32"},
            {"kind": "gram", "images": 2, "rows": 16, "K": 96, "N": 2, "calls_per_frame": 4, "unfused_ms": 0.5,
             "product_ms": 0.25, "fused_ms": 0.125, "fused_GB_per_s": 10.0, "fused_max_abs_err": 1e-4,
             "fused_config": "BLOCK_N: 128"}]
    table = markdown(rows, "title")
    assert "| **per frame** | | | 9 | **9.00** | **4.50** | **5.75** |" in table
    assert "| norm | 64 | 48 -> 144 | 3 |" in table
    assert "| gram | 32 | 96, heads 2 | 4 |" in table
