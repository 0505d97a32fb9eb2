"""bench/kernel_tables.py: the per-kernel benchmarks' shared command line, totals and files."""
from __future__ import annotations

import json

import pytest
import torch

from bench import kernel_tables


def test_per_frame_totals_weight_each_variant_by_calls():
    rows = [{"calls_per_frame": 3, "a_ms": 1.0, "b_ms": 0.5}, {"calls_per_frame": 2, "a_ms": 2.0, "b_ms": 0.25}]
    assert kernel_tables.per_frame_totals(rows, ("a", "b")) == [7.0, 2.0]


def test_results_are_written_together_or_not_at_all(tmp_path):
    kernel_tables.write_results(None, "x", {"rows": []}, "table")
    assert not list(tmp_path.iterdir())
    kernel_tables.write_results(tmp_path / "out", "x", {"rows": [1]}, "| table |\n")
    assert json.loads((tmp_path / "out" / "x.json").read_text()) == {"rows": [1]}
    assert (tmp_path / "out" / "x.md").read_text() == "| table |\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.json", "x.md"]  # no temporaries left


def test_parser_reads_the_shared_options():
    args = kernel_tables.kernel_parser("Doc.\n\nMore.", "x").parse_args(["--size", "640x360", "--preset", "gopro"])
    assert args.size.label == "640x360" and args.preset == "gopro" and args.out is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_the_benchmarks_exit_with_a_message(capsys):
    from bench import dwconv_kernels, gdfn_kernels, norm_matmul_kernels

    for module in (dwconv_kernels, gdfn_kernels, norm_matmul_kernels):
        with pytest.raises(SystemExit):
            module.main(["--size", "64x40"])
        assert "run it on a machine with a GPU" in capsys.readouterr().err


def test_kernel_table_aligns_columns_and_totals_the_named_ones():
    rows = [{"name": "a", "calls_per_frame": 3, "x_ms": 1.0}, {"name": "b", "calls_per_frame": 2, "x_ms": 0.5}]
    table = kernel_tables.kernel_table("T", [
        kernel_tables.Column("name", lambda r: r["name"], numeric=False),
        kernel_tables.Column("calls", lambda r: str(r["calls_per_frame"]), "calls"),
        kernel_tables.Column("x ms", lambda r: f"{r['x_ms']:.3f}", "x"),
        kernel_tables.Column("note", lambda r: ""),
    ], rows)
    assert table.splitlines() == ["## T", "", "| name | calls | x ms | note |", "| --- | ---: | ---: | ---: |",
                                  "| a | 3 | 1.000 | |", "| b | 2 | 0.500 | |", "| **per frame** | 5 | **4.00** | |"]
