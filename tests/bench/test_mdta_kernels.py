"""bench/mdta_kernels.py on the CPU: its table (the timings need a GPU; the shapes are
bench/gdfn_kernels.py's, tested there)."""
from __future__ import annotations

from bench.mdta_kernels import markdown


def test_markdown_totals_weight_by_calls():
    rows = [{"channels": 48, "heads": 1, "height": 8, "width": 8, "calls_per_frame": 3, "per_op_ms": 1.0,
             "two_pass_ms": 0.5, "two_pass_GB_per_s": 100.0, "per_op_max_abs_err": 1e-3, "two_pass_max_abs_err": 2e-3,
             "two_pass_configs": "TH: 8, num_ctas: 1; TH: 4, num_ctas: 1"},
            {"channels": 96, "heads": 2, "height": 4, "width": 4, "calls_per_frame": 2, "per_op_ms": 2.0,
             "two_pass_ms": 0.25, "two_pass_GB_per_s": 100.0, "per_op_max_abs_err": 1e-3, "two_pass_max_abs_err": 2e-3,
             "two_pass_configs": "TH: 8; TH: 8"}]
    table = markdown(rows, "title")
    assert "| **per frame** | | | 5 | **7.00** | **2.00** |" in table
    assert "| TH: 8; TH: 4 |" in table
