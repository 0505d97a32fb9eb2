"""Deblur a paired test folder with one backend and score it as the paper did.

    python bench/accuracy.py BLUR_DIR SHARP_DIR --backend tensorrt --engines PLANS_DIR --protocol gopro \
        --expect GoPro --out OUT
    python bench/accuracy.py BLUR_DIR SHARP_DIR --backend torch-fp16 --weights W.safetensors --out OUT

Every blurry image (paired with its target by file name) goes through the runtime
(``runtime.Deblurrer`` on exactly the chosen backend and precision, no fallback, seeded z_T); the
result is saved as an 8-bit PNG in ``OUT/images``, read back and scored with
:mod:`hidiff.evaluate` (``gopro``: MATLAB PSNR/SSIM on the saved PNGs; ``realblur``:
evaluate_realblur.py's alignment).
Written to ``OUT``: ``images/NAME.png``, ``scores.csv`` (per image: PSNR, SSIM, size, deblur
time) and ``accuracy.json`` (means, settings, and with ``--expect NAME`` the paper's figures and
the differences). Backend names are those of ``bench/latency.py``.
Exit codes: 0 done, 2 bad input (one line on stderr).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from bench.backends import BENCH_BACKENDS, BenchBackend, artifact_precision, unavailable_reason
from bench.inputs import ModelChoice, add_model_arguments, load_model, model_choice_from_args
from bench.report import describe_environment, write_atomic
from engines.artifacts import ExportManifest
from engines.base import EngineError
from hidiff.data.paired import pair_by_name, read_rgb
from hidiff.evaluate import PAPER_RESULTS, PROTOCOLS, SSIM_MODES, EvaluationResult, evaluate_pairs
from hidiff.model import HIDiff

# A BGR uint8 frame (H, W, 3) in, the deblurred BGR uint8 frame out.
DeblurFunction = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class AccuracySettings:
    blur_dir: Path
    sharp_dir: Path
    backend: str
    out_dir: Path
    device: str = "cpu"
    protocol: str = "gopro"
    ssim_mode: str = "matlab"
    expect: str | None = None
    engines_dir: Path | None = None
    seed: int = 0
    steps: int | None = None  # T of the engines; None: the model's, or 8

    def __post_init__(self) -> None:
        if self.backend not in BENCH_BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose from {', '.join(BENCH_BACKENDS)}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose from {', '.join(PROTOCOLS)}")
        if self.ssim_mode not in SSIM_MODES:
            raise ValueError(f"unknown SSIM mode {self.ssim_mode!r}; choose from {', '.join(SSIM_MODES)}")
        if self.expect is not None and self.expect not in PAPER_RESULTS:
            raise ValueError(f"--expect {self.expect!r}: the paper reports {', '.join(PAPER_RESULTS)}")


@dataclass(frozen=True)
class ImageRun:
    name: str
    width: int
    height: int
    seconds: float


def open_deblurrer(backend: BenchBackend, model: HIDiff | None, settings: AccuracySettings) -> Any:
    """A runtime.Deblurrer on exactly this backend, in the precision of its artifacts (strict: no fallback)."""
    from runtime import Deblurrer

    if not backend.needs_artifacts and model is None:
        raise ValueError(f"backend {backend.name} runs the PyTorch model: pass --weights, --net-g/--net-le-dm/--net-d "
                         "or --preset")
    if settings.steps is not None:
        steps = settings.steps
    elif model is not None:
        steps = model.schedule.num_timesteps
    else:
        steps = _artifact_steps(settings.engines_dir) or 8
    name, engines_choice = backend.runtime_backend()
    return Deblurrer(
        engines=settings.engines_dir if backend.needs_artifacts else None,
        backend=name,
        device=settings.device,
        precision=artifact_precision(backend, settings.engines_dir if backend.needs_artifacts else None),
        steps=steps,
        seed=settings.seed,
        strict=True,
        model=None if backend.needs_artifacts else model,
        **engines_choice,
    )


def _artifact_steps(folder: Path | None) -> int | None:
    """T from an export manifest (``model.config.diffusion_schedule.timesteps``), if it says."""
    if folder is None:
        return None
    try:
        return ExportManifest.read(folder).num_timesteps
    except (OSError, ValueError):  # TensorRT plans without an export manifest; the runtime names what is wrong
        return None


def deblur_folder(pairs: Sequence[tuple[str, Path, Path]], deblur: DeblurFunction, images_dir: Path) -> list[ImageRun]:
    """Deblur every blurry image of ``pairs`` and save ``images_dir/NAME.png`` (8-bit)."""
    runs = []
    for name, blur_path, _ in tqdm(pairs, desc="deblur", unit="img", file=sys.stderr):
        rgb = read_rgb(blur_path)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        start = time.perf_counter()
        sharp = deblur(bgr)
        seconds = time.perf_counter() - start
        if sharp.shape != bgr.shape or sharp.dtype != np.uint8:
            raise EngineError(f"{name}: the deblurred frame is {sharp.dtype} {sharp.shape}, expected uint8 {bgr.shape}")
        ok, encoded = cv2.imencode(".png", sharp)
        if not ok:
            raise OSError(f"{name}: OpenCV could not encode the result as PNG")
        write_atomic(images_dir / f"{name}.png", encoded.tobytes())
        runs.append(ImageRun(name, bgr.shape[1], bgr.shape[0], seconds))
    return runs


def scores_csv(result: EvaluationResult, runs: Sequence[ImageRun]) -> str:
    by_name = {run.name: run for run in runs}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "psnr", "ssim", "width", "height", "deblur_ms"])
    for row in result.rows:
        run = by_name[row.name]
        writer.writerow([row.name, f"{row.psnr:.6f}", f"{row.ssim:.8f}", run.width, run.height, f"{run.seconds * 1e3:.3f}"])
    return buffer.getvalue()


def paper_comparison(result: EvaluationResult, expect: str) -> dict[str, float | str]:
    paper_psnr, paper_ssim = PAPER_RESULTS[expect]
    return {
        "dataset": expect,
        "paper_psnr": paper_psnr,
        "paper_ssim": paper_ssim,
        "psnr_difference": result.mean_psnr - paper_psnr,
        "ssim_difference": result.mean_ssim - paper_ssim,
    }


def run_accuracy(settings: AccuracySettings, choice: ModelChoice, command: str = "") -> dict[str, Any]:
    """Deblur, save, score; writes everything under ``settings.out_dir`` and returns the summary."""
    backend = BENCH_BACKENDS[settings.backend]
    reason = unavailable_reason(backend, settings.device, settings.engines_dir if backend.needs_artifacts else None)
    if reason is not None:
        raise EngineError(f"backend {settings.backend} cannot run here: {reason}")
    pairs = pair_by_name(settings.blur_dir, settings.sharp_dir)
    # Exported graphs carry their own weights: load a model only when the backend runs one or one was named.
    wants_model = not backend.needs_artifacts or not choice.is_default
    model, model_source = load_model(choice, settings.seed) if wants_model else (None, f"artifacts {settings.engines_dir}")
    images_dir = settings.out_dir / "images"
    with open_deblurrer(backend, model, settings) as deblurrer:
        runs = deblur_folder(pairs, deblurrer.deblur, images_dir)
        deblur_path = f"runtime.Deblurrer: {deblurrer.describe()}"
        deblurrer_precision = deblurrer.precision.value
    # Score exactly the files written now (a folder reused from another run may hold others).
    scored = ((name, read_rgb(images_dir / f"{name}.png"), read_rgb(sharp)) for name, _, sharp in pairs)
    result = evaluate_pairs(scored, settings.protocol, settings.ssim_mode, progress=True, total=len(pairs))
    write_atomic(settings.out_dir / "scores.csv", scores_csv(result, runs))
    summary: dict[str, Any] = {
        "tool": "bench/accuracy.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "backend": settings.backend,
        "precision": deblurrer_precision,
        "deblurrer": deblur_path,
        "model": model_source,
        "device": settings.device,
        "seed": settings.seed,
        "blur_dir": str(settings.blur_dir),
        "sharp_dir": str(settings.sharp_dir),
        "evaluation": result.describe(),
        "protocol": result.protocol,
        "ssim_mode": result.ssim_mode,
        "images": len(result.rows),
        "mean_psnr": result.mean_psnr,
        "mean_ssim": result.mean_ssim,
        "mean_deblur_ms": float(np.mean([run.seconds for run in runs])) * 1e3,
        "paper": paper_comparison(result, settings.expect) if settings.expect else None,
        "environment": describe_environment(settings.device),
    }
    write_atomic(settings.out_dir / "accuracy.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/accuracy.py",
        description="Deblur a paired folder with one backend and score it with the paper's protocol.",
    )
    parser.add_argument("blur_dir", type=Path, help="blurry images")
    parser.add_argument("sharp_dir", type=Path, help="sharp targets (same file names)")
    parser.add_argument("--backend", default="torch-fp32", choices=list(BENCH_BACKENDS), help="default: %(default)s")
    parser.add_argument("--engines", type=Path, default=None,
                        help="ONNX export folder (onnxruntime-*) or TensorRT plans folder (tensorrt)")
    add_model_arguments(parser)
    parser.add_argument("--protocol", choices=PROTOCOLS, default="gopro", help="gopro (GoPro, HIDE) or realblur")
    parser.add_argument("--ssim", choices=SSIM_MODES, default="matlab", help="SSIM of the gopro protocol")
    parser.add_argument("--expect", choices=sorted(PAPER_RESULTS), default=None, help="compare with the paper's table")
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of z_T (and of random weights)")
    parser.add_argument("--steps", type=int, default=None,
                        help="diffusion steps T baked into the engines (default: the model's; 8 for artifacts alone)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    try:
        settings = AccuracySettings(
            blur_dir=args.blur_dir, sharp_dir=args.sharp_dir, backend=args.backend, out_dir=args.out,
            device=args.device, protocol=args.protocol, ssim_mode=args.ssim, expect=args.expect,
            engines_dir=args.engines, seed=args.seed, steps=args.steps,
        )
        choice = model_choice_from_args(args)
        summary = run_accuracy(settings, choice, shlex.join(["python", "bench/accuracy.py", *argv]))
    except (ValueError, OSError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary["evaluation"])
    print(f"backend {summary['backend']}, {summary['mean_deblur_ms']:.1f} ms per image; "
          f"per-image scores: {settings.out_dir / 'scores.csv'}")
    paper = summary["paper"]
    if paper is not None:
        print(f"paper, {paper['dataset']}: PSNR {paper['paper_psnr']:.2f} dB  SSIM {paper['paper_ssim']:.3f}  "
              f"(difference {paper['psnr_difference']:+.2f} dB, {paper['ssim_difference']:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
