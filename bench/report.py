"""The latency report in the forms people read: a text table, markdown, a plot and checked JSON.

Input is the dictionary :func:`bench.latency.run_benchmark` returns (the content of
``latency.json``, described by ``bench/schema/latency.schema.json``). Every file is written to a
temporary name in its folder and renamed into place, so a reader never sees half a report.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hidiff.files import write_atomic

SCHEMA_PATH = Path(__file__).resolve().with_name("schema") / "latency.schema.json"
REPO_ROOT = Path(__file__).resolve().parents[1]
MIB = 1024.0 * 1024.0
JSON_NAME = "latency.json"
MARKDOWN_NAME = "latency.md"
PLOT_NAME = "latency.png"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_report(report: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first place where ``report`` breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(report))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ValueError(f"latency report breaks {SCHEMA_PATH.name} at {where}: {error.message}")


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str],
                 warn: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Validate and write ``latency.json``, ``latency.md`` and ``latency.png`` into ``out_dir``.

    Without the [bench] extra (jsonschema, matplotlib) the JSON is written unvalidated and the
    plot is left out, each with a warning: a long GPU run is not lost to a missing package.
    """
    out = Path(out_dir)
    say = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    if importlib.util.find_spec("jsonschema") is not None:
        validate_report(report)
    else:
        say("jsonschema is not installed: latency.json is written without schema validation (pip install jsonschema)")
    # allow_nan=False: a NaN or infinity would make the file invalid JSON for other readers.
    text = json.dumps(report, indent=2, allow_nan=False)
    paths = {
        "json": write_atomic(out / JSON_NAME, text + "\n"),
        "markdown": write_atomic(out / MARKDOWN_NAME, markdown(report)),
    }
    if importlib.util.find_spec("matplotlib") is not None:
        paths["plot"] = plot_latency(report, out / PLOT_NAME)
    else:
        say("matplotlib is not installed: no latency.png (pip install matplotlib)")
    return paths


# --------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------


def describe_environment(device: str) -> dict[str, Any]:
    """Machine, library versions and source revision, for the JSON report.

    Device properties come from torch (name, compute capability, memory, SM count, integrated);
    the driver's CUDA version from cudaDriverGetVersion (cuda-bindings), which a Jetson answers
    too, and its release from nvidia-smi where there is one; on a Jetson also the power mode,
    the clocks and one tegrastats sample (:func:`jetson_state`).
    """
    import torch

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    props = torch.cuda.get_device_properties(dev) if cuda else None
    cudnn = torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None
    commit = _git("rev-parse", "HEAD")  # None outside a git checkout (a copied tree, an installed package)
    integrated = bool(getattr(props, "is_integrated", False)) if props is not None else None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(cudnn) if cudnn is not None else None,
        "onnxruntime": _installed_version("onnxruntime-gpu", "onnxruntime"),
        "tensorrt": _installed_version("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
        "device": str(dev),
        "device_name": props.name if props is not None else _cpu_name(),
        "driver": _driver_cuda_version() if cuda else None,
        "driver_release": _driver_release() if cuda else None,
        "compute_capability": f"{props.major}.{props.minor}" if props is not None else None,
        "device_memory_mb": props.total_memory / MIB if props is not None else None,
        "sm_count": int(props.multi_processor_count) if props is not None else None,
        "integrated": integrated,
        "jetson": jetson_state() if cuda else None,
        "git_commit": commit,
        "git_dirty": None if commit is None else bool(_git("status", "--porcelain")),
    }


def _installed_version(*distributions: str) -> str | None:
    # Package metadata rather than an import: importing TensorRT or ONNX Runtime costs seconds.
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _driver_cuda_version() -> str | None:
    """The CUDA version the driver supports ("12.6"), from cudaDriverGetVersion; None without
    cuda-bindings or a driver."""
    from engines.base import BackendUnavailable
    from engines.cuda import CudaError, call

    try:
        version = int(call("cudaDriverGetVersion"))
    except (BackendUnavailable, CudaError):
        return None
    return f"{version // 1000}.{version % 1000 // 10}"


def _driver_release() -> str | None:
    """The driver release ("560.35.03") from nvidia-smi; None where it has none (a Jetson's
    nvidia-smi shows no driver version) or is missing."""
    out = _command_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    first = out.splitlines()[0].strip() if out else ""
    return first if first and first[0].isdigit() else None


def _command_output(command: list[str], timeout: float = 10.0, first_line_only: bool = False) -> str | None:
    """A command's stdout (None if it is missing or fails). ``first_line_only``: for a command
    that prints until it is stopped (tegrastats): the first line within ``timeout``."""
    if shutil.which(command[0]) is None:
        return None
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True).stdout
    except subprocess.TimeoutExpired as exc:  # run() killed it; what it printed until then is kept
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    except (OSError, subprocess.SubprocessError):
        return None
    out = out.strip()
    if first_line_only:
        out = out.splitlines()[0] if out else ""
    return out or None


def jetson_state() -> dict[str, str | None] | None:
    """A Jetson's power mode (``nvpmodel -q``), clocks (``jetson_clocks --show``, which may need
    root) and one ``tegrastats`` sample; None on a machine without these tools."""
    if not any(shutil.which(tool) for tool in ("nvpmodel", "jetson_clocks", "tegrastats")):
        return None
    return {
        "power_mode": _command_output(["nvpmodel", "-q"]),
        "clocks": _command_output(["jetson_clocks", "--show"]),
        "tegrastats": _command_output(["tegrastats", "--interval", "500"], timeout=2.0, first_line_only=True),
    }


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def _ok(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [r for r in report["results"] if r["status"] == "ok"]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _psnr(accuracy: Mapping[str, Any] | None) -> str:
    if accuracy is None:
        return "-"
    return "exact" if accuracy["exact"] else f"{accuracy['psnr_db']:.2f}"


def _speedup(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _case(result: Mapping[str, Any]) -> str:
    return f"{result['width']}x{result['height']}"


def _memory_mb(result: Mapping[str, Any]) -> tuple[float | None, float | None]:
    memory = result["memory"]
    return memory["torch_max_allocated_mb"], memory["device_used_delta_mb"]


SUMMARY_HEADER = ("Backend", "Size", "B", "Host median", "p90", "p99", "GPU Compute", "LE_DM", "Denoise", "Restormer",
                  "H2D", "D2H", "Enqueue", "Frames/s", "Cold", "torch MB", "dev +MB", "Speed-up", "PSNR dB", "Max err")


def summary_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """One row per measured case, in :data:`SUMMARY_HEADER` order; times in ms (medians unless
    named), memory in MiB, speed-up and accuracy against the reference."""
    rows = []
    for r in report["results"]:
        if r["status"] != "ok":
            rows.append((r["backend"], _case(r), str(r["batch"]), "FAILED: " + (r["error"] or ""), *[""] * 16))
            continue
        m = r["metrics"]
        torch_mb, device_mb = _memory_mb(r)
        accuracy = r["accuracy"]
        rows.append((
            r["backend"], _case(r), str(r["batch"]),
            _ms(m["Host Latency"]["median"]), _ms(m["Host Latency"]["p90"]), _ms(m["Host Latency"]["p99"]),
            _ms(m["GPU Compute Time"]["median"]), _ms(m["LE_DM"]["median"]), _ms(m["Denoising Steps"]["median"]),
            _ms(m["Restormer"]["median"]), _ms(m["H2D Latency"]["median"]), _ms(m["D2H Latency"]["median"]),
            _ms(m["Enqueue Time"]["median"]), _number(r["throughput_fps"]), _ms(r["cold_ms"]),
            _number(torch_mb, 0), _number(device_mb, 0), _speedup(r["speedup_vs_reference"]), _psnr(accuracy),
            "-" if accuracy is None else f"{accuracy['max_abs_error']:.2e}",
        ))
    return rows


def format_table(report: Mapping[str, Any]) -> str:
    """The plain-text table printed at the end of a run."""
    env = report["environment"]
    settings = report["settings"]
    rows = summary_rows(report)
    lines = [
        f"HI-Diff latency on {env['device_name']} ({env['device']}), torch {env['torch']}, "
        f"{settings['timer']}, model: {settings['model']['source']}",
        "Times in ms (median unless named; Host Latency = H2D .. D2H, GPU Compute = LE_DM + "
        f"{settings['model']['timesteps']} denoising steps + Restormer), accuracy vs {settings['reference']}",
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows if not row[3].startswith("FAILED"))) if rows else len(h)
              for i, h in enumerate(SUMMARY_HEADER)]
    lines.append("  ".join(h.rjust(w) if i > 1 else h.ljust(w) for i, (h, w) in enumerate(zip(SUMMARY_HEADER, widths))))
    for row in rows:
        if row[3].startswith("FAILED"):
            lines.append(f"{row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2].rjust(widths[2])}  {row[3]}")
            continue
        lines.append("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    for item in report["skipped"]:
        lines.append(f"skipped {_skipped_label(item)}: {item['reason']}")
    if not report["complete"]:
        lines.append("PARTIAL: not every case has run")
    return "\n".join(lines)


def trtexec_section(report: Mapping[str, Any]) -> list[str]:
    """The trtexec commands that time each TensorRT plan alone, one block per case."""
    lines: list[str] = []
    for r in report["results"]:
        if r.get("trtexec"):
            lines.append(f"# {r['backend']} {_case(r)} batch {r['batch']} (one denoising step; the table counts "
                         f"{report['settings']['model']['timesteps']})")
            lines.extend(r["trtexec"])
    return lines


def _skipped_label(item: Mapping[str, Any]) -> str:
    """A skipped backend's name, or a skipped case's size and batch (every backend skips it)."""
    return f"{item['size']} batch {item['batch']}" if "size" in item else str(item["backend"])


def _one_line(text: str | None) -> str:
    return " ".join(text.split()) if text else "-"


def markdown(report: Mapping[str, Any]) -> str:
    """The report as a markdown page: context, the summary table, stage and memory details."""
    env = report["environment"]
    s = report["settings"]
    versions = ", ".join(f"{k} {env[k]}" for k in ("torch", "cuda", "cudnn", "onnxruntime", "tensorrt") if env[k])
    out = [
        "# HI-Diff latency",
        "",
        f"- date: {report['date']}; host {env['hostname']}; git {env['git_commit'] or 'unknown'}"
        + (" (uncommitted changes)" if env["git_dirty"] else ""),
        f"- device: {env['device_name']} ({env['device']}), driver {env.get('driver_release') or '-'} (CUDA "
        f"{env['driver'] or '-'}), compute capability {env['compute_capability'] or '-'}"
        f"{', integrated GPU' if env.get('integrated') else ''}; CPU {env['cpu']}",
        *([f"- Jetson: power mode {_one_line(env['jetson'].get('power_mode'))}; tegrastats "
           f"{_one_line(env['jetson'].get('tegrastats'))}"] if env.get("jetson") else []),
        f"- versions: {versions}",
        f"- model: {s['model']['source']}; {s['model']['parameters']:,} parameters; prior {s['model']['prior_shape']}; "
        f"{s['model']['timesteps']} denoising steps",
        f"- timing: {s['timer']}, warm-up {s['warmup_ms']:g} ms, {s['duration_s']:g} s and at least "
        f"{s['min_iters']} iterations per case (at most {s['max_case_s']:g} s, then 2 iterations suffice); "
        f"TF32 {'on' if s['tf32'] else 'off'}; denoising loop as one CUDA graph {'allowed' if s['cuda_graph'] else 'off'}; "
        f"input {s['input_image']}",
        f"- command: `{s['command']}`",
        *([] if report["complete"] else ["- **partial: written while the run was going; not every case has run**"]),
        "",
        "Times in ms, medians unless named. Host Latency spans H2D to D2H on the device timeline; GPU Compute "
        "Time is LE_DM + denoising steps + Restormer; Frames/s is over wall time with one iteration in flight; "
        "Cold is the first call (set-up, compilation). Speed-up is the reference's median Host Latency over "
        f"this one's; PSNR and max abs error compare the [0, 1] output with {s['reference']}'s on the same input "
        "and z_T. torch MB is torch's peak allocation; dev +MB is device-wide used memory after the timed loop "
        "minus before the engines were opened (the only figure that sees TensorRT and ONNX Runtime memory).",
        "",
        "| " + " | ".join(SUMMARY_HEADER) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(SUMMARY_HEADER))) + "|",
    ]
    for row in summary_rows(report):
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    ok = _ok(report)
    if ok:
        out += ["", "## Host Latency distribution and other stages (ms)", "",
                "| Backend | Size | B | mean | min | median | p90 | p95 | p99 | max | Preprocess | Postprocess | Wall | Iterations |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in ok:
            h = r["metrics"]["Host Latency"]
            out.append(
                f"| {r['backend']} | {_case(r)} | {r['batch']} | "
                + " | ".join(_ms(h[k]) for k in ("mean", "min", "median", "p90", "p95", "p99", "max"))
                + f" | {_ms(r['metrics']['Preprocess']['median'])} | {_ms(r['metrics']['Postprocess']['median'])}"
                f" | {_ms(r['metrics']['Wall Latency']['median'])} | {r['iterations']} |"
            )
    if any(r["memory"]["torch_max_allocated_mb"] is not None for r in ok):
        out += ["", "## Memory (MiB)", "",
                "| Backend | Size | B | torch peak allocated | torch peak reserved | first call, torch peak | device used, growth |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for r in ok:
            mem = r["memory"]
            out.append(f"| {r['backend']} | {_case(r)} | {r['batch']} | " + " | ".join(
                _number(mem[k], 0) for k in ("torch_max_allocated_mb", "torch_max_reserved_mb",
                                             "cold_torch_max_allocated_mb", "device_used_delta_mb")) + " |")
    if report["skipped"]:
        out += ["", "## Skipped", ""] + [f"- {_skipped_label(i)}: {i['reason']}" for i in report["skipped"]]
    notes = sorted({r["memory"]["note"] for r in ok})
    if notes:
        out += ["", "## Memory notes", ""] + [f"- {n}" for n in notes]
    trtexec = trtexec_section(report)
    if trtexec:
        out += ["", "## trtexec cross-check", "", "```sh", *trtexec, "```"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------


def plot_latency(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Grouped bars of median Host Latency by case (size, batch) and backend, whiskers to p90;
    a log axis when the figures span more than 20x."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    ok = _ok(report)
    cases = list(dict.fromkeys((r["width"], r["height"], r["batch"]) for r in ok))
    backends = list(dict.fromkeys(r["backend"] for r in ok))
    by_key = {(r["backend"], r["width"], r["height"], r["batch"]): r for r in ok}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(cases) * max(1, len(backends)) ** 0.5 + 3), 4.5))
    if not ok:
        ax.text(0.5, 0.5, "no successful measurements", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        width = 0.8 / len(backends)
        for i, backend in enumerate(backends):
            xs, heights, upper = [], [], []
            for j, (w, h, b) in enumerate(cases):
                r = by_key.get((backend, w, h, b))
                if r is None:
                    continue
                host = r["metrics"]["Host Latency"]
                xs.append(j - 0.4 + width * (i + 0.5))
                heights.append(host["median"])
                upper.append(host["p90"] - host["median"])
            ax.bar(xs, heights, width, label=backend, yerr=[[0.0] * len(upper), upper], capsize=3)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels([f"{w}x{h}\nbatch {b}" for w, h, b in cases])
        ax.set_ylabel("Host Latency, ms (median, whisker p90)")
        values = [r["metrics"]["Host Latency"]["median"] for r in ok]
        if min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")
        ax.legend(fontsize="small")
        ax.grid(axis="y", alpha=0.3)
    env = report["environment"]
    ax.set_title(f"HI-Diff latency, {env['device_name']}", fontsize="medium")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())


def stats_are_ordered(stats: Mapping[str, float]) -> bool:
    """min <= median <= p90 <= p95 <= p99 <= max and min <= mean <= max (a sanity check for readers)."""
    chain: Sequence[float] = [stats[k] for k in ("min", "median", "p90", "p95", "p99", "max")]
    ordered = all(a <= b + 1e-9 for a, b in zip(chain[:-1], chain[1:]))
    return ordered and stats["min"] - 1e-9 <= stats["mean"] <= stats["max"] + 1e-9 and all(map(math.isfinite, chain))
