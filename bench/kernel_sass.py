"""The project's Triton kernels compiled for an H100 (sm_90) on any machine, no GPU needed: their
registers and spills, and the machine instructions of their main loop by opcode.

    python bench/kernel_sass.py                      # the fused GDFN kernel, its shipped tiles
    python bench/kernel_sass.py --channels 128 --tile 4 64 4 34
    python bench/kernel_sass.py --halo 48                # the whole-GDFN kernel's instructions a pixel

Triton compiles with its own ptxas and reads the cubin back with its own cuobjdump. The counts
printed are per thread and loop iteration, and per output element: a kernel bound by instruction
issue is read here before any GPU run. The tests compile every autotuned tile this way to check
that none spills registers.
"""
from __future__ import annotations

import argparse
import math
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

_INSTRUCTION = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", re.M)


def compile_cuda(kernel: Any, types: Mapping[str, str], constants: Mapping[str, Any], warps: int,
                 stages: int | None = None, aligned: Collection[str] = (), capability: int = 90) -> Any:
    """``kernel`` (a ``@triton.jit`` function) compiled for sm_``capability`` (90: H100, 80: A100,
    87: Jetson Orin) as a launch would compile it:
    ``types`` gives each non-constant argument's Triton type (``*fp16``, ``i32``, ``fp32``,
    ``tensordesc<fp16[64, 64]>``...), ``aligned`` the arguments specialised as multiples of 16."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {name: "constexpr" if name in constants else types[name] for name in kernel.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(kernel.arg_names) if name in aligned}
    options: dict[str, int | bool] = {"num_warps": warps, "enable_fp_fusion": True}
    if stages is not None:
        options["num_stages"] = stages
    return triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=dict(constants), attrs=attrs),
                          target=GPUTarget("cuda", capability, 32), options=options)


def cuobjdump(compiled: Any, flag: str) -> str:
    """``cuobjdump FLAG`` (``-res-usage``, ``-sass``) of a compiled kernel's cubin."""
    import triton

    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        return subprocess.run([triton.knobs.nvidia.cuobjdump.path, flag, str(cubin)], capture_output=True, text=True,
                              check=True).stdout


def resources(compiled: Any) -> dict[str, int]:
    """REG (registers per thread), STACK and LOCAL (spills: both 0 when none)."""
    usage = cuobjdump(compiled, "-res-usage")
    return {key: int(value) for key, value in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", usage)}


def loop_opcodes(sass: str) -> list[Counter[str]]:
    """The instructions of each loop of ``sass`` (:func:`loop_spans`), in program order, counted by
    opcode (without its modifiers; a predicate does not count as one)."""
    program = [(int(address, 16), text) for address, text in _INSTRUCTION.findall(sass)]
    loops = []
    for start, end in loop_spans(sass):
        counts: Counter[str] = Counter()
        for address, instruction in program:
            if start <= address <= end:
                words = instruction.split()
                opcode = words[1] if words[0].startswith("@") else words[0]
                counts[opcode.split(".")[0]] += 1
        loops.append(counts)
    return loops


def loop_spans(sass: str) -> list[tuple[int, int]]:
    """(first, last) address of each loop of ``sass`` (a backward branch and the span from its
    target), in order of their ends: inner loops before the loops that hold them."""
    spans = []
    for end, text in ((int(address, 16), text) for address, text in _INSTRUCTION.findall(sass)):
        targets = re.findall(r"\bBRA\s+`?\(?0x([0-9a-f]+)", text)
        if targets and int(targets[-1], 16) < end:
            spans.append((int(targets[-1], 16), end))
    return spans


def gated_dwconv_loop(channels: int, pairs: int, block_c: int, warps: int, rows: int) -> tuple[dict[str, int], Counter[str]]:
    """engines.kernels.gated_dwconv's kernel for a channels-last float16 map of 2 x ``channels``:
    its resources and its unmasked loop (three input rows an iteration), the first of its two: the
    second, with masks, runs the strips at the image's edges."""
    from engines.kernels.gated_dwconv import gated_dwconv3x3_kernel

    compiled = compile_cuda(gated_dwconv3x3_kernel.fn, {"y_ptr": "*fp16", "w_ptr": "*fp16", "b_ptr": "*fp16",
                                                        "out_ptr": "*fp16", "H": "i32", "W": "i32"},
                            {"C": channels, "HAS_BIAS": False, "ROWS": rows, "PAIRS": pairs, "BLOCK_C": block_c},
                            warps, aligned=("y_ptr", "w_ptr", "b_ptr", "out_ptr"))
    return resources(compiled), loop_opcodes(cuobjdump(compiled, "-sass"))[0]


def gopro_hidden(channels: int) -> int:
    """The GoPro Restormer's GDFN hidden width at a block of ``channels``, padded to a multiple of
    hidiff.aligned_channels.ALIGNMENT as the fastest form pads it."""
    from engines.kernels.support import cdiv
    from hidiff.aligned_channels import ALIGNMENT

    return cdiv(int(2.66 * channels), ALIGNMENT) * ALIGNMENT


# An H100 SXM: SMs, warp schedulers per SM (one instruction a cycle each) and its highest clock.
H100_SMS, SCHEDULERS, H100_BOOST_HZ = 132, 4, 1.98e9


def halo_block_profile(channels: int, tile: Sequence[int], capability: int = 90) -> dict[str, Any]:
    """engines.kernels.halo_tiles' kernel with the gate (a GDFN of ``channels`` channels, its hidden
    width :func:`gopro_hidden`, float16) at ``tile`` (TH, TW, BLOCK_P, CHUNK, warps): its resources and the
    instructions a thread issues per tile, by loop (each loop's own instructions times its trips and
    those of the loops around it: the tiles, in them the halo's normalisation and the chunks, in
    those the projection and the depthwise taps, told apart by nesting and by their tensor-core
    products), and the warp instructions a pixel. A loop it cannot place raises ValueError."""
    from engines.kernels import halo_tiles as ht
    from engines.kernels.support import cdiv, dot_block

    th, tw, block_p, chunk, warps = tile
    hidden = gopro_hidden(channels)
    constants = {"C": channels, "HIDDEN": hidden, "IN_COLS": 2 * hidden, "IN_OFFSET": 0,
                 "TAP_ROW": 2 * ht.tap_group(hidden), "GATE": True, "OUT_PER_IMAGE": False,
                 "BLOCK_C": dot_block(channels), "BIAS_FREE": False, "HAS_DW_BIAS": False, "HAS_OUT_BIAS": False,
                 "TH": th, "TW": tw, "BLOCK_P": block_p, "CHUNK": chunk, "PER_SM": 1}
    kernel = ht.halo_block_kernel.fn
    types = {name: "*fp16" if name.endswith("_ptr") else "fp32" if name == "eps" else "i32"
             for name in kernel.arg_names if name not in constants}
    # a launch on a map whose height, width and slot are multiples of 16 (1280x720)
    aligned = [name for name in types if name.endswith("_ptr") or name in ("H", "W", "slot_elements")]
    compiled = compile_cuda(kernel, types, constants, warps, 1, aligned, capability)
    sass = cuobjdump(compiled, "-sass")
    program = [(int(address, 16), text) for address, text in _INSTRUCTION.findall(sass)]
    spans = loop_spans(sass)

    def inside(inner: tuple[int, int], outer: tuple[int, int]) -> bool:
        return inner != outer and outer[0] <= inner[0] and inner[1] <= outer[1]

    def own(span: tuple[int, int]) -> int:  # instructions of a loop outside the loops it holds
        nested = [s for s in spans if inside(s, span)]
        return sum(1 for a, _ in program if span[0] <= a <= span[1] and not any(s[0] <= a <= s[1] for s in nested))

    def has(span: tuple[int, int], opcode: str) -> bool:
        return any(span[0] <= a <= span[1] and re.search(rf"\b{opcode}\b", text) for a, text in program)

    def depth(span: tuple[int, int]) -> int:
        return sum(inside(span, other) for other in spans)

    halo = ht.halo_blocks(th, tw, block_p)
    trips = {"tile": 1, "normalise": halo, "chunk": cdiv(hidden, chunk), "project": halo, "taps": 9}
    names: dict[tuple[int, int], str] = {}
    for span in spans:
        products = has(span, "HGMMA") or has(span, "HMMA")
        if depth(span) == 0:
            names[span] = "tile"
        elif depth(span) == 1:
            names[span] = "chunk" if products else "normalise"
        elif depth(span) == 2 and products:
            names[span] = "project"
        elif depth(span) == 2 and (has(span, "HFMA2") or has(span, "FFMA")) and not has(span, "BAR"):
            names[span] = "taps"
        else:
            names[span] = "?"
    if sorted(names.values()).count("tile") != 1 or "?" in names.values() or len(set(names.values())) != len(names):
        raise ValueError(f"halo_block_profile: loops {sorted(names.values())} in the kernel at {channels} channels, "
                         f"tile {tile}: not the tile, normalisation, chunk, projection and taps loops it reads")
    # A loop's instructions run its trips times its enclosing loops' trips; a loop ptxas unrolled is
    # straight-line code of the loop around it, counted there.
    parts = {name: 0 for name in ("normalise", "project", "taps", "chunk", "tile")}
    for span, name in names.items():
        runs = trips[name] * math.prod(trips[names[o]] for o in spans if inside(span, o))
        parts[name] += own(span) * runs
    total = sum(parts.values())
    return {"resources": resources(compiled), "per_tile": parts, "total_per_tile": total,
            "warp_instructions_per_pixel": total * warps / (th * tw)}


def issue_floor_ms(warp_instructions_per_pixel: float, pixels: int) -> float:
    """The time an H100 SXM takes to issue that many instructions a pixel over ``pixels`` pixels at
    its highest clock, one instruction a cycle per scheduler: a floor no stall is counted in."""
    return warp_instructions_per_pixel * pixels / (H100_SMS * SCHEDULERS * H100_BOOST_HZ) * 1e3


def halo_main(channels: int, size: tuple[int, int]) -> None:
    from engines.kernels import halo_tiles as ht
    from engines.kernels.support import dot_block

    print(f"engines.kernels.halo_tiles' kernel with the gate, {channels} channels (hidden {gopro_hidden(channels)}), "
          f"float16, sm_90; issue floor at {size[0]}x{size[1]} on an H100 SXM ({H100_SMS} SMs x {SCHEDULERS} "
          f"schedulers at {H100_BOOST_HZ / 1e9:.2f} GHz):")
    for th, tw, block_p, chunk, warps, _ in ht.TILES:
        if not ht.tile_fits(th, tw, block_p, dot_block(channels), True, chunk, warps):
            continue
        tile = (th, tw, block_p, chunk, warps)
        try:
            p = halo_block_profile(channels, tile)
        except ValueError as exc:
            print(f"  tile {tile}: {exc}")
            continue
        parts = ", ".join(f"{k} {v}" for k, v in p["per_tile"].items())
        print(f"  tile {tile}: {p['resources']}; a thread issues {p['total_per_tile']} instructions a tile ({parts}); "
              f"{p['warp_instructions_per_pixel']:.0f} warp instructions a pixel, "
              f"{issue_floor_ms(p['warp_instructions_per_pixel'], size[0] * size[1]):.3f} ms")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=256, help="gated channels C (the input has 2C)")
    parser.add_argument("--tile", type=int, nargs=4, metavar=("PAIRS", "BLOCK_C", "WARPS", "ROWS"),
                        help="one tile (default: every tile of the autotuner's list, in strips of 34 rows)")
    parser.add_argument("--halo", type=int, metavar="C",
                        help="instead: the whole-GDFN halo kernel at a block width of C channels, each of its tiles")
    parser.add_argument("--size", default="1280x720", help="the map's WIDTHxHEIGHT for --halo's issue floor")
    args = parser.parse_args(argv)
    if args.halo:
        width, height = (int(v) for v in args.size.lower().split("x"))
        halo_main(args.halo, (width, height))
        return 0
    from engines.kernels.gated_dwconv import TILES

    tiles = [tuple(args.tile)] if args.tile else [(*tile, 34) for tile in TILES]
    for pairs, block_c, warps, rows in tiles:
        usage, counts = gated_dwconv_loop(args.channels, pairs, block_c, warps, rows)
        # a loop iteration: three input rows, each completing one output row of 2 x PAIRS x BLOCK_C
        outputs_per_thread = 3 * 2 * pairs * block_c // (32 * warps)
        total = sum(counts.values())
        print(f"tile pairs={pairs} channels={block_c} warps={warps} rows={rows}: {usage}; loop {total} instructions "
              f"a thread, {total / outputs_per_thread:.1f} an output element")
        print("  " + ", ".join(f"{op} {n}" for op, n in counts.most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
