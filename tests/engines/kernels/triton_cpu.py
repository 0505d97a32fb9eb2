"""Triton kernels checked without a GPU: run by Triton's interpreter on the CPU, and compiled for
an H100 (sm_90), an A100 (sm_80) or a Jetson Orin (sm_87) with Triton's own ptxas, their
registers, spills and shared memory read back from the cubin with Triton's cuobjdump."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]

# The cards the kernels run on: H100 (sm_90), A100 (sm_80), Jetson Orin (sm_87), and the most shared
# memory a block of each may take (CUDA's "maximum shared memory per block, opt-in").
CAPABILITIES = (90, 80, 87)
SHARED_PER_BLOCK = {90: 227 * 1024, 80: 163 * 1024, 87: 163 * 1024}


def run_in_interpreter(script: str) -> str:
    """Run ``script`` with TRITON_INTERPRET=1 (read when Triton is imported: hence a fresh Python
    process) from the repository root; returns its standard output, fails with its error."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def cuda_resources(kernel: Any, pointers: Collection[str], constants: Mapping[str, Any], warps: int,
                   unaligned: Collection[str] = (), scalars: Mapping[str, str] | None = None,
                   stages: int | None = None, capability: int = 90) -> dict[str, int]:
    """REG, STACK, LOCAL and the shared memory in bytes (``shared``) of ``kernel`` (a ``@triton.jit``
    function) compiled for sm_``capability``:
    ``pointers`` are float16 pointers, ``constants`` the constexprs and specialised values, the
    other arguments int32 (``scalars`` names other types, e.g. ``{"eps": "fp32"}``) and, except
    ``unaligned``, multiples of 16, as a launch on channels-last tensors specialises them."""
    from bench.kernel_sass import compile_cuda, resources

    scalars = dict(scalars or {})
    types = {name: "*fp16" if name in pointers else scalars.get(name, "i32") for name in kernel.arg_names
             if name not in constants}
    aligned = [name for name in types if name not in unaligned and name not in scalars]
    compiled = compile_cuda(kernel, types, constants, warps, stages, aligned, capability)
    return {**resources(compiled), "shared": compiled.metadata.shared}


def fits(usage: Mapping[str, int], capability: int) -> bool:
    """No spills (STACK and LOCAL 0) and shared memory within sm_``capability``'s block limit."""
    return usage["STACK"] == 0 and usage["LOCAL"] == 0 and usage["shared"] <= SHARED_PER_BLOCK[capability]
