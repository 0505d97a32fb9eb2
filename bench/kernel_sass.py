"""The project's Triton kernels compiled for an H100 (sm_90) on any machine, no GPU needed: their
registers and spills, and the machine instructions of their main loop by opcode.

    python bench/kernel_sass.py                      # the fused GDFN kernel, its shipped tiles
    python bench/kernel_sass.py --channels 128 --tile 4 64 4 34

Triton compiles with its own ptxas and reads the cubin back with its own cuobjdump. The counts
printed are per thread and loop iteration, and per output element: a kernel bound by instruction
issue is read here before any GPU run. The tests compile every autotuned tile this way to check
that none spills registers.
"""
from __future__ import annotations

import argparse
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
    """The instructions of each loop of ``sass`` (the span from a backward branch's target to the
    branch), in program order, counted by opcode (without its modifiers; a predicate does not
    count as one)."""
    program = [(int(address, 16), text) for address, text in _INSTRUCTION.findall(sass)]
    loops = []
    for end, text in program:
        targets = re.findall(r"\bBRA\s+`?\(?0x([0-9a-f]+)", text)
        if targets and int(targets[-1], 16) < end:
            start = int(targets[-1], 16)
            counts: Counter[str] = Counter()
            for address, instruction in program:
                if start <= address <= end:
                    words = instruction.split()
                    opcode = words[1] if words[0].startswith("@") else words[0]
                    counts[opcode.split(".")[0]] += 1
            loops.append(counts)
    return loops


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=256, help="gated channels C (the input has 2C)")
    parser.add_argument("--tile", type=int, nargs=4, metavar=("PAIRS", "BLOCK_C", "WARPS", "ROWS"),
                        help="one tile (default: every tile of the autotuner's list, in strips of 34 rows)")
    args = parser.parse_args(argv)
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
