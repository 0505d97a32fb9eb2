"""Which CUDA kernels take a graph's GPU time, for any backend (PyTorch, ONNX Runtime, TensorRT).

    python bench/kernel_profile.py --backend onnxruntime-cuda --onnx DIR --graph restormer --size 1280x720
    python bench/kernel_profile.py --backend torch-fp16-nhwc --preset gopro --graph restormer --size 1280x720

The graph runs through the engine interface on device-resident inputs (a natural image, unit
Gaussian prior tokens); after warm-up, ``torch.profiler`` records the CUDA kernels of a few runs
through CUPTI, which sees every kernel of the process, also those ONNX Runtime and TensorRT
launch. Prints the kernels by total GPU time and a summary by kind of kernel (GEMMs, depthwise
convolutions, inductor's generated kernels, ...); ``--out`` keeps the full table (text), the
summary and a Chrome trace. ``--summarize TABLE`` prints the summary of a saved table (no GPU).
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.backends import BENCH_BACKENDS, open_bench_backend
from bench.inputs import ImageSize, add_model_arguments, load_model, model_choice_from_args, natural_frames
from hidiff.files import write_atomic

# Kinds of CUDA kernel, by name (first match wins): library kernels keep recognisable names.
# engines.kernels' kernels are named after their functions (tables saved before they were public
# name them with a leading underscore).
KERNEL_KINDS = (
    ("fused GDFN kernel (Triton)", re.compile(r"^_?gated_dwconv3x3_kernel")),
    ("LayerNorm + projection kernel (Triton)", re.compile(r"^_?norm_matmul(_tma)?_kernel")),
    ("projection + residual kernel (Triton)", re.compile(r"^_?matmul_residual_kernel")),
    ("HIM prior attention kernel (Triton)", re.compile(r"^_?prior_attention_kernel")),
    ("MDTA q k^T per head (Triton)", re.compile(r"^_?head_gram_kernel")),
    ("depthwise convolutions (cuDNN)", re.compile(r"depthwise")),
    # before attention: inductor names its kernels after the ops they feed (``..._prior_attention_...``)
    ("inductor's generated kernels (norms, activations, residuals)", re.compile(r"^triton_")),
    ("attention", re.compile(r"sdpa|flash|fmha|attention", re.I)),  # before convolutions: cuDNN's names say fprop
    ("other convolutions (cuDNN)", re.compile(r"fprop|conv2d|convolve|dgrad|wgrad", re.I)),
    ("matrix products (cuBLAS, CUTLASS)", re.compile(r"nvjet|gemm|cutlass|cublas", re.I)),
    ("PyTorch's elementwise kernels and copies", re.compile(r"elementwise|copy|memcpy|memset|reduce|CatArray|fill",
                                                           re.I)),
)
_TIME = re.compile(r"^([0-9.]+)(us|ms|s)$")


@dataclass
class KernelRow:
    name: str
    self_device_ms: float  # summed over the profiled runs
    calls: int


def _ms(text: str) -> float:
    match = _TIME.match(text)
    if not match:
        raise ValueError(f"not a time: {text!r}")
    return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)]


def kernel_rows(table: str) -> list[KernelRow]:
    """The CUDA kernels of a ``key_averages().table()``: rows with no CPU time of their own and
    some device time (the CPU-side rows, operators and launchers, have CPU time)."""
    lines = table.splitlines()
    header = next((line for line in lines if line.strip().startswith("Name") and "Self CPU" in line), None)
    if header is None:
        raise ValueError("no profiler table header (a line starting with Name ... Self CPU) in the text")
    columns = re.split(r"\s{2,}", header.strip())
    device = next((c for c in columns if re.fullmatch(r"Self (CUDA|XPU|device)", c)), None)
    if device is None or "# of Calls" not in columns:
        raise ValueError(f"the profiler table has no device-time column (a CPU-only profile?): {columns}")
    self_cpu, self_device, calls = columns.index("Self CPU"), columns.index(device), columns.index("# of Calls")
    rows = []
    for line in lines:
        fields = re.split(r"\s{2,}", line.strip())
        if len(fields) != len(columns) or fields[0] == "Name" or not _TIME.match(fields[self_cpu]):
            continue
        if _ms(fields[self_cpu]) == 0 and _ms(fields[self_device]) > 0:
            rows.append(KernelRow(fields[0], _ms(fields[self_device]), int(fields[calls])))
    return rows


def kernel_kind(name: str) -> str:
    return next((kind for kind, pattern in KERNEL_KINDS if pattern.search(name)), "other")


def kinds_markdown(rows: list[KernelRow], runs: int, title: str) -> str:
    """GPU time per run by kind of kernel, largest first."""
    by_kind: dict[str, list[KernelRow]] = {}
    for row in rows:
        by_kind.setdefault(kernel_kind(row.name), []).append(row)
    total = sum(row.self_device_ms for row in rows) / runs
    lines = [f"## {title}", "", "| kind of kernel | kernels | launches per run | ms per run | share |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for kind, members in sorted(by_kind.items(), key=lambda item: -sum(r.self_device_ms for r in item[1])):
        ms = sum(r.self_device_ms for r in members) / runs
        lines.append(f"| {kind} | {len(members)} | {sum(r.calls for r in members) / runs:g} | {ms:.2f} | "
                     f"{100 * ms / total:.1f} % |")
    lines.append(f"| **all kernels** | {len(rows)} | {sum(r.calls for r in rows) / runs:g} | **{total:.2f}** | 100 % |")
    return "\n".join(lines) + "\n"


def summarize(path: Path) -> str:
    """The kinds table of a table saved by this script (its first line names the runs)."""
    text = path.read_text()
    found = re.search(r", (\d+) runs?,", text.splitlines()[0] if text else "")
    if found is None:
        raise ValueError(f"{path}: the first line does not say how many runs were profiled (\", N runs,\")")
    return kinds_markdown(kernel_rows(text), int(found.group(1)), text.splitlines()[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/kernel_profile.py", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--backend", default="torch-fp16-nhwc", choices=tuple(BENCH_BACKENDS))
    parser.add_argument("--onnx", type=Path, default=None, help="ONNX export (onnxruntime-*), plans (tensorrt) or AOTInductor packages (aoti)")
    parser.add_argument("--graph", default="restormer", choices=("le_dm", "restormer"))
    parser.add_argument("--size", type=ImageSize.parse, default=ImageSize.parse("1280x720"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--summarize", type=Path, default=None, metavar="TABLE",
                        help="print the kinds of kernel of a table this script saved, and exit (no GPU needed)")
    args = parser.parse_args(argv)
    if args.summarize is not None:
        try:
            print(summarize(args.summarize))
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
        return 0
    if not torch.cuda.is_available():
        print("kernel_profile: needs a CUDA device", file=sys.stderr)
        return 1
    backend = BENCH_BACKENDS[args.backend]
    model = None if backend.needs_artifacts else load_model(model_choice_from_args(args), seed=0)[0]
    engines = open_bench_backend(backend, model, "cuda:0", args.onnx, backend.precision)
    engine = engines.engines[args.graph]
    frames = natural_frames(args.size, 1)[..., ::-1].copy()
    blur = torch.from_numpy(frames).cuda().permute(0, 3, 1, 2).float().div(255.0).contiguous()
    feeds = {"blur": blur}
    if args.graph == "restormer":
        tokens, channels = engines.engines["denoise_step"].contract.fixed_dims["tokens"], \
            engines.engines["denoise_step"].contract.fixed_dims["channels"]
        feeds["prior"] = torch.randn(1, int(tokens), int(channels), device="cuda")
    for _ in range(2):
        engine.infer(feeds)
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.runs):
            engine.infer(feeds)
        torch.cuda.synchronize()
    averages = prof.key_averages()
    table = averages.table(sort_by="device_time_total", row_limit=args.top, max_name_column_width=90)
    title = f"{args.backend} {args.graph} {args.size.label}, {args.runs} runs, {torch.cuda.get_device_name(0)}"
    whole = averages.table(sort_by="device_time_total", row_limit=-1, max_name_column_width=90)
    kinds = kinds_markdown(kernel_rows(whole), args.runs, title)
    print(title)
    print(table)
    print(kinds)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"{args.backend}_{args.graph}_{args.size.label}"
        write_atomic(args.out / f"kernels_{stem}.txt", title + "\n" + whole)
        write_atomic(args.out / f"kinds_{stem}.md", kinds)
        prof.export_chrome_trace(str(args.out / f"trace_{stem}.json"))
    engines.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
