"""Where an exported graph spends its time in ONNX Runtime: per op type and per node.

    python bench/ort_profile.py ONNX_DIR --graph restormer --size 1280x720 [--provider cuda] [--out DIR]

Runs the graph with ONNX Runtime's own profiler (``SessionOptions.enable_profiling``) on a
natural image, after warm-up runs, and sums the kernel time of every node over the timed runs.
Prints the op types and the nodes that take the most time; ``--out`` keeps the summary (JSON) and
ONNX Runtime's raw trace (Chrome trace format, viewable in chrome://tracing or Perfetto).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.inputs import ImageSize, natural_frames
from hidiff.files import write_atomic

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def graph_feeds(session: Any, size: ImageSize, batch: int) -> dict[str, np.ndarray]:
    """Inputs for every graph input: natural images for (B, 3, H, W), unit Gaussians for the
    prior tokens, the last step index for ``t``."""
    frames = natural_frames(size, batch)[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for arg in session.get_inputs():
        if arg.name == "t":
            feeds[arg.name] = np.array([0], dtype=np.int64)
        elif len(arg.shape) == 4:
            feeds[arg.name] = np.ascontiguousarray(frames)
        else:
            tokens, channels = arg.shape[1], arg.shape[2]
            feeds[arg.name] = rng.standard_normal((batch, tokens, channels)).astype(np.float32)
    return feeds


def summarize_trace(events: Sequence[Mapping[str, Any]], runs: int) -> dict[str, Any]:
    """Kernel time per op type and per node (microseconds per run) from ONNX Runtime's trace."""
    by_type: Counter[str] = Counter()
    by_node: Counter[str] = Counter()
    node_type: dict[str, str] = {}
    calls: defaultdict[str, int] = defaultdict(int)
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(event["name"])[: -len("_kernel_time")]
        op = str(event.get("args", {}).get("op_name", "?"))
        by_type[op] += int(event.get("dur", 0))
        by_node[name] += int(event.get("dur", 0))
        node_type[name] = op
        calls[op] += 1
    total = sum(by_type.values())
    return {
        "runs": runs,
        "total_ms_per_run": total / runs / 1e3,
        "by_op_type": [{"op": op, "ms_per_run": us / runs / 1e3, "share": us / total if total else 0.0,
                        "nodes_per_run": calls[op] // runs} for op, us in by_type.most_common()],
        "by_node": [{"node": name, "op": node_type[name], "ms_per_run": us / runs / 1e3}
                    for name, us in by_node.most_common(40)],
    }


def profile(onnx_path: Path, provider: str, size: ImageSize, batch: int, warmup: int, runs: int,
            trace_dir: Path) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(trace_dir / onnx_path.stem)
    provider_options: dict[str, str] = {"device_id": "0"} if provider == "cuda" else {}
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=[PROVIDERS[provider]],
                                   provider_options=[provider_options])
    if PROVIDERS[provider] not in session.get_providers():
        raise RuntimeError(f"ONNX Runtime did not register {PROVIDERS[provider]} (got {session.get_providers()})")
    feeds = graph_feeds(session, size, batch)
    for _ in range(warmup):
        session.run(None, feeds)
    # Warm-up events are in the trace too: keep only the last ``runs`` runs' node events.
    for _ in range(runs):
        session.run(None, feeds)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    run_starts = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if len(run_starts) >= runs:
        first = run_starts[-runs]["ts"]
        events = [e for e in events if e.get("ts", 0) >= first]
    summary = summarize_trace(events, runs)
    summary.update({"graph": onnx_path.name, "provider": provider, "size": size.label, "batch": batch,
                    "onnxruntime": ort.__version__, "trace": trace.name})
    return summary


def format_summary(summary: Mapping[str, Any], top: int) -> str:
    lines = [f"{summary['graph']} on {summary['provider']}, {summary['size']} batch {summary['batch']}, "
             f"onnxruntime {summary['onnxruntime']}: {summary['total_ms_per_run']:.1f} ms of node kernels per run",
             f"{'op type':<28}{'ms/run':>10}{'share':>8}{'nodes':>7}"]
    for row in summary["by_op_type"][:top]:
        lines.append(f"{row['op']:<28}{row['ms_per_run']:>10.2f}{row['share']:>8.1%}{row['nodes_per_run']:>7}")
    lines.append(f"{'slowest nodes':<60}{'op':<20}{'ms/run':>8}")
    for row in summary["by_node"][:top]:
        lines.append(f"{row['node'][:59]:<60}{row['op']:<20}{row['ms_per_run']:>8.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/ort_profile.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx_dir", type=Path, help="export folder (build_engines.py --no-engines --out DIR)")
    parser.add_argument("--graph", default="restormer", choices=("le_dm", "denoise_step", "restormer"))
    parser.add_argument("--size", type=ImageSize.parse, default=ImageSize.parse("1280x720"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--provider", choices=tuple(PROVIDERS), default="cuda")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="keep summary JSON and the raw trace here")
    args = parser.parse_args(argv)
    onnx_path = args.onnx_dir / f"{args.graph}.onnx"
    if not onnx_path.is_file():
        print(f"error: {onnx_path} does not exist; export the graphs first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        try:
            summary = profile(onnx_path, args.provider, args.size, args.batch, args.warmup, args.runs, Path(tmp))
        except (RuntimeError, ImportError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(format_summary(summary, args.top))
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            write_atomic(args.out / f"ort_profile_{args.graph}_{args.size.label}.json", json.dumps(summary, indent=2))
            shutil.copy(Path(tmp) / summary["trace"], args.out / summary["trace"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
