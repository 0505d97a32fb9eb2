"""Process start to the first sharp frame, steady-state latency and peak memory: the AOTInductor
packages against the just-in-time compiled PyTorch form, each form in a new process.

    python bench/aoti_start.py --engines out/ --device cuda:0 --sizes 1280x720 1920x1080 [model options]
    python bench/aoti_start.py --engines out/ --device cpu --sizes 96x64 --forms aoti --threads 1

``aoti`` opens the packages in ``--engines`` (export/build_engines.py writes them), ``aoti-dynamic``
only their dynamic packages (the per-shape packages left out: what they gain); ``jit`` runs the
model (same model options as bench/latency.py) compiled with torch.compile: on CUDA in FP16 with
the fused Triton kernels and CUDA graphs (the ``fastest`` preset), on the CPU in FP32 (``compiled``).
Each form's process deblurs one frame of each size (the first frame of the first size is the cold
start, timed from before the parent starts the process), then ``--frames`` more of each size
(steady state: their median), and compares its last frame with eager FP32 of the same model (PSNR;
pass the model the packages were built from). Prints a table and one JSON line per form (which
also says why any graph ran without its CUDA graph). With ``--profile DIR`` (CUDA), each form then
profiles two more frames of each size and writes where their GPU time goes, by kind of kernel
(bench/kernel_profile.py's tables, through the same ``Deblurrer`` the timing used), to
DIR/kinds_FORM_SIZE.md and the whole kernel list to DIR/kernels_FORM_SIZE.txt.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from runtime.deblurrer import Deblurrer

RESULT = "RESULT "  # the prefix of the child's one line of JSON
FORMS = ("aoti", "aoti-dynamic", "jit")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from bench.inputs import add_model_arguments

    p = argparse.ArgumentParser(prog="aoti_start.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", type=Path, help="folder with AOTInductor packages (needed by the aoti form)")
    p.add_argument("--device", default="cuda:0", help="cuda:N or cpu (default cuda:0)")
    p.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"], help="WxH frame sizes, in this order")
    p.add_argument("--forms", nargs="+", choices=FORMS, default=["aoti", "jit"])
    p.add_argument("--frames", type=int, default=20, help="frames per size after the first (default 20)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of each process (OMP_NUM_THREADS)")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="also write each form's GPU time by kind of kernel per size to DIR (CUDA only)")
    p.add_argument("--child", choices=FORMS, help=argparse.SUPPRESS)
    p.add_argument("--started", type=float, help=argparse.SUPPRESS)
    add_model_arguments(p)
    return p.parse_args(argv)


def dynamic_packages(folder: Path, into: Path) -> Path:
    """Links in ``into`` to the dynamic packages of ``folder`` and their manifests; returns ``into``."""
    from engines.aoti_backend import manifest_path, package_files

    for package in package_files(folder):
        if len(package.name.split(".")) == 3:  # GRAPH.DEVICE-PRECISION.pt2; a per-shape name adds BxHxW
            for path in (package, manifest_path(package)):
                (into / path.name).symlink_to(path.resolve())
    return into


def run_form(args: argparse.Namespace) -> dict:
    """In the child: the measurements of one form (see the module docstring)."""
    import torch

    from bench.inputs import ImageSize, load_model, model_choice_from_args, natural_frames
    from hidiff.metrics import psnr
    from runtime.deblurrer import Deblurrer

    cuda = args.device != "cpu"
    if args.child.startswith("aoti"):
        engines = args.engines
        if args.child == "aoti-dynamic":
            engines = dynamic_packages(engines, Path(tempfile.mkdtemp(prefix="aoti-dynamic-")))
        deblurrer = Deblurrer(engines=engines, backend="aoti", device=args.device, strict=True)
        model, source = None, ""  # loaded after the timing: the packages' start needs no model
    else:
        model, source = load_model(model_choice_from_args(args), seed=0)
        deblurrer = Deblurrer(model=model, backend="torch", device=args.device, precision="fp16" if cuda else "fp32",
                              torch_settings="fastest" if cuda else "compiled", strict=True)
    result: dict = {"form": args.child, "backend": deblurrer.backend, "reason": deblurrer.backend_reason,
                    "model": source, "device": str(deblurrer.device), "sizes": {}}
    if cuda:
        result["gpu"] = torch.cuda.get_device_name(deblurrer.device)
    frames = {size: natural_frames(ImageSize.parse(size), 1)[0] for size in args.sizes}
    for size, frame in frames.items():
        start = time.perf_counter()
        out = deblurrer.deblur(frame)  # a numpy frame: the work is finished when it returns
        first_ms = (time.perf_counter() - start) * 1e3
        if "first_frame_s" not in result:
            result["first_frame_s"] = time.time() - args.started
        times = []
        for _ in range(args.frames):
            start = time.perf_counter()
            out = deblurrer.deblur(frame)
            times.append((time.perf_counter() - start) * 1e3)
        result["sizes"][size] = {"first_ms": first_ms, "steady_ms": statistics.median(times) if times else None}
        if args.profile is not None and cuda:
            result["sizes"][size]["kernel_ms"] = profile_frames(deblurrer, frame, args.profile, f"{args.child}_{size}")
    if cuda:
        result["peak_allocated_mib"] = torch.cuda.max_memory_allocated(deblurrer.device) / 2**20
        free, total = torch.cuda.mem_get_info(deblurrer.device)
        result["device_used_mib"] = (total - free) / 2**20  # the process's context, weights and pools too
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Why a graph ran without its CUDA graphs (None: replayed), and the denoising loop's.
    result["cuda_graph_errors"] = {name: getattr(engine, "cuda_graph_error", None)
                                   for name, engine in deblurrer.engines.engines.items()}
    result["cuda_graph_errors"]["denoising loop"] = deblurrer.pipeline.loop.graph_error
    deblurrer.close()
    if model is None:
        model, result["model"] = load_model(model_choice_from_args(args), seed=0)
    with Deblurrer(model=model, backend="torch", device=args.device, precision="fp32") as eager:
        result["psnr_vs_eager_fp32_db"] = psnr(out, eager.deblur(frame))
    return result


def profile_frames(deblurrer: "Deblurrer", frame: "np.ndarray", folder: Path, stem: str, runs: int = 2) -> float:
    """Profile ``runs`` deblurs of ``frame``; write the kernel list and the kinds table under
    ``folder``; return the GPU time of one frame's kernels (ms)."""
    import torch

    from bench.kernel_profile import kernel_rows, kinds_markdown
    from hidiff.files import write_atomic

    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(runs):
            deblurrer.deblur(frame)
    whole = prof.key_averages().table(sort_by="device_time_total", row_limit=-1, max_name_column_width=90)
    title = f"{stem.replace('_', ' ')}, {runs} runs, {torch.cuda.get_device_name(deblurrer.device)}"
    rows = kernel_rows(whole)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"kernels_{stem}.txt", title + "\n" + whole)
    write_atomic(folder / f"kinds_{stem}.md", kinds_markdown(rows, runs, title))
    return sum(row.self_device_ms for row in rows) / runs


def spawn(form: str, args: argparse.Namespace, argv: Sequence[str]) -> dict:
    """Run one form in a new process; returns its measurements (or its error)."""
    env = dict(os.environ)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "bench.aoti_start", *argv, "--child", form,
                           "--started", repr(started)], env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        return {"form": form, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return dict(json.loads(lines[-1][len(RESULT):]))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        print(RESULT + json.dumps(run_form(args)), flush=True)
        return 0
    if args.profile is not None and args.device == "cpu":
        print("error: --profile times CUDA kernels; it needs a CUDA --device", file=sys.stderr)
        return 2
    if any(form.startswith("aoti") for form in args.forms) and args.engines is None:
        print("error: the aoti forms need --engines FOLDER (export/build_engines.py writes the packages)", file=sys.stderr)
        return 2
    results = [spawn(form, args, argv) for form in args.forms]
    print(f"{'form':<13}{'first frame (s)':>17}" + "".join(f"{s + ' first/steady (ms)':>32}" for s in args.sizes)
          + f"{'peak (MiB)':>12}{'PSNR (dB)':>11}")
    for r in results:
        if "error" in r:
            print(f"{r['form']:<13} failed: {r['error']}")
            continue
        cells = "".join(f"{r['sizes'][s]['first_ms']:>20.1f} / {r['sizes'][s]['steady_ms'] or 0:>9.1f}" for s in args.sizes)
        peak = r.get("peak_allocated_mib", r["peak_rss_mib"])
        print(f"{r['form']:<13}{r['first_frame_s']:>17.2f}{cells}{peak:>12.0f}{r['psnr_vs_eager_fp32_db']:>11.2f}")
    for r in results:
        print(json.dumps(r))
    if args.profile is not None:  # this run's tables (the folder may hold others)
        for table in (args.profile / f"kinds_{form}_{size}.md" for form in args.forms for size in args.sizes):
            if table.is_file():
                print("\n" + table.read_text())
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
