"""bench/kernel_sass.py: the loop finder on a known listing, and the fused GDFN kernel's machine code
for an H100 compiled on the CPU (Triton's own ptxas), held to its instruction count."""
from __future__ import annotations

import importlib.util

import pytest

from bench.kernel_sass import gated_dwconv_loop, loop_opcodes, main

LISTING = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   FFMA R2, R3, R4, R5 ;
        /*0020*/              @P0 LDG.E.128 R8, desc[UR4][R6.64] ;
        /*0030*/                   FMUL R2, R2, R2 ;
        /*0040*/              @P1 BRA 0x10 ;
        /*0050*/                   STG.E [R6.64], R2 ;
        /*0060*/                   HADD2.F32 R9, -RZ, R8.H0_H0 ;
        /*0070*/              @P2 BRA 0x60 ;
        /*0080*/                   EXIT ;
        /*0090*/                   BRA 0x90;
"""


def test_loops_are_the_spans_of_backward_branches_counted_by_opcode():
    first, second = loop_opcodes(LISTING)
    assert first == {"FFMA": 1, "LDG": 1, "FMUL": 1, "BRA": 1}  # predicates and modifiers dropped
    assert second == {"HADD2": 1, "BRA": 1}  # the self-branch at the end is no loop


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_gdfn_kernel_loop_stays_near_56_instructions_an_output():
    """The unmasked loop of the shipped tile: 24 unmasked loads (3 rows x 4 columns x 2 halves), 6
    stores, and no libdevice erff, whose coefficient selects would add dozens of register moves
    (the loop with it took 82 instructions an output element; without, 56)."""
    usage, counts = gated_dwconv_loop(256, 4, 64, 4, 34)
    assert usage["STACK"] == 0 and usage["LOCAL"] == 0
    assert counts["LDG"] == 24 and counts["STG"] == 6
    outputs_per_thread = 3 * 2 * 4 * 64 // 128
    assert sum(counts.values()) / outputs_per_thread < 60, counts
    assert counts["MOV"] < 40, counts  # no copies of the rotating sums


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_command_line_prints_a_tile(capsys):
    assert main(["--channels", "64", "--tile", "2", "64", "2", "16"]) == 0
    printed = capsys.readouterr().out
    assert "tile pairs=2 channels=64 warps=2 rows=16" in printed and "an output element" in printed


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_halo_kernel_profile_places_its_loops_within_400_instructions_a_pixel():
    """The whole-GDFN kernel at 48 channels, 16 x 16 tiles: every instruction placed in a part, the
    depthwise taps in a loop of their own (unrolled, its loads spilled registers at 96 and 192
    channels), within 400 warp instructions a pixel (float32 sums of taps loaded one channel at a
    time issue over 500)."""
    from bench.kernel_sass import halo_block_profile, issue_floor_ms

    profile = halo_block_profile(48, (16, 16, 64, 32, 8))
    parts = profile["per_tile"]
    assert profile["resources"]["STACK"] == 0
    assert sum(parts.values()) == profile["total_per_tile"] and parts["taps"] > 0 and parts["project"] > 0
    assert profile["warp_instructions_per_pixel"] < 400, profile
    assert issue_floor_ms(400, 1280 * 720) == pytest.approx(400 * 1280 * 720 / (132 * 4 * 1.98e9) * 1e3)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_halo_command_line_names_each_tile(capsys):
    assert main(["--halo", "192"]) == 0
    printed = capsys.readouterr().out
    assert "192 channels (hidden 512)" in printed and "tile (8, 8, 64, 32, 8)" in printed
