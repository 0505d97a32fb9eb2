"""Triton kernels checked without a GPU: run by Triton's interpreter on the CPU, and compiled for
an H100 (sm_90) with Triton's own ptxas, their registers and spills read back from the cubin with
Triton's cuobjdump."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_in_interpreter(script: str) -> str:
    """Run ``script`` with TRITON_INTERPRET=1 (read when Triton is imported: hence a fresh Python
    process) from the repository root; returns its standard output, fails with its error."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def sm90_resources(kernel: Any, pointers: Collection[str], constants: Mapping[str, Any], warps: int,
                   unaligned: Collection[str] = (), scalars: Mapping[str, str] | None = None,
                   stages: int | None = None) -> dict[str, int]:
    """REG, STACK and LOCAL of ``kernel`` (a ``@triton.jit`` function) compiled for sm_90:
    ``pointers`` are float16 pointers, ``constants`` the constexprs and specialised values, the
    other arguments int32 (``scalars`` names other types, e.g. ``{"eps": "fp32"}``) and, except
    ``unaligned``, multiples of 16, as a launch on channels-last tensors specialises them."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    scalars = dict(scalars or {})
    signature = {name: "*fp16" if name in pointers else "constexpr" if name in constants else scalars.get(name, "i32")
                 for name in kernel.arg_names}
    aligned = [i for i, name in enumerate(kernel.arg_names)
               if name not in constants and name not in unaligned and name not in scalars]
    source = ASTSource(fn=kernel, signature=signature, constexprs=dict(constants),
                       attrs={(i,): [["tt.divisibility", 16]] for i in aligned})
    options: dict[str, int | bool] = {"num_warps": warps, "enable_fp_fusion": True}  # as launches compile
    if stages is not None:
        options["num_stages"] = stages
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([triton.knobs.nvidia.cuobjdump.path, "-res-usage", str(cubin)], capture_output=True,
                               text=True, check=True).stdout
    return {key: int(value) for key, value in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", usage)}
