"""Score a folder of deblurred images against its targets, as the paper did.

    python -m hidiff.evaluate PRED_DIR TARGET_DIR [--protocol gopro|realblur]
                              [--ssim matlab|per_channel] [--csv out.csv] [--json out.json]
                              [--compare GoPro|HIDE|RealBlur-J|RealBlur-R]

Protocols (see :mod:`hidiff.metrics`):
- ``gopro`` (GoPro and HIDE): MATLAB ``psnr`` and ``ssim`` on the 8-bit images; ``--ssim matlab``
  (default) scores RGB as one volume like MATLAB, ``--ssim per_channel`` is the BasicSR /
  scikit-image convention and is not comparable with the paper.
- ``realblur``: evaluate_realblur.py: intensity gain + ECC homography alignment, then PSNR/SSIM
  over the valid pixels (its own SSIM; ``--ssim`` does not apply).

Files are paired BY NAME (stem): the official scripts pair sorted listings, which silently
mis-pairs everything after a missing file. A missing partner or an extra file is an error that
names the files. Exit codes: 0 success, 2 bad input (one-line message on stderr).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hidiff import metrics
from hidiff.data.paired import pair_by_name, read_rgb
from hidiff.files import write_atomic

# Paper (HI-Diff, NeurIPS 2023, Tables 1 and 2): dataset -> (PSNR dB, SSIM), GoPro-trained model on
# GoPro/HIDE (MATLAB protocol), RealBlur-trained models on RealBlur (evaluate_realblur.py).
PAPER_RESULTS: dict[str, tuple[float, float]] = {
    "GoPro": (33.33, 0.964),
    "HIDE": (31.46, 0.945),
    "RealBlur-J": (33.70, 0.941),
    "RealBlur-R": (41.01, 0.978),
}

PROTOCOLS = ("gopro", "realblur")
SSIM_MODES = ("matlab", "per_channel")


@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr: float
    ssim: float


@dataclass(frozen=True)
class EvaluationResult:
    """Per-image scores and their means.

    protocol: "gopro" or "realblur"; ssim_mode: "matlab", "per_channel" or "realblur" (the
    RealBlur protocol's own SSIM).
    """

    protocol: str
    ssim_mode: str
    rows: tuple[ImageScore, ...]

    @property
    def mean_psnr(self) -> float:
        return float(np.mean([row.psnr for row in self.rows])) if self.rows else math.nan

    @property
    def mean_ssim(self) -> float:
        return float(np.mean([row.ssim for row in self.rows])) if self.rows else math.nan

    def to_dict(self) -> dict[str, object]:
        return {
            "protocol": self.protocol,
            "ssim_mode": self.ssim_mode,
            "images": len(self.rows),
            "mean_psnr": self.mean_psnr,
            "mean_ssim": self.mean_ssim,
            "rows": [asdict(row) for row in self.rows],
        }

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["name", "psnr", "ssim"])
        for row in self.rows:
            writer.writerow([row.name, f"{row.psnr:.6f}", f"{row.ssim:.8f}"])
        return buffer.getvalue()

    def describe(self) -> str:
        how = {
            ("gopro", "matlab"): "MATLAB psnr/ssim, SSIM over the RGB volume",
            ("gopro", "per_channel"): "MATLAB psnr, per-channel SSIM (BasicSR/skimage; not the paper's SSIM)",
        }.get((self.protocol, self.ssim_mode), "evaluate_realblur.py: gain + ECC alignment, valid pixels only")
        return (
            f"{self.protocol} protocol ({how}), {len(self.rows)} images: "
            f"PSNR {self.mean_psnr:.4f} dB  SSIM {self.mean_ssim:.6f}"
        )


def _check_options(protocol: str, ssim_mode: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if ssim_mode not in SSIM_MODES:
        raise ValueError(f"unknown ssim mode {ssim_mode!r}; expected one of {', '.join(SSIM_MODES)}")


def score_pair(pred: np.ndarray, target: np.ndarray, protocol: str = "gopro", ssim_mode: str = "matlab") -> ImageScore:
    """PSNR and SSIM of one (H, W, 3) uint8 RGB pair (name left empty)."""
    _check_options(protocol, ssim_mode)
    if protocol == "realblur":
        psnr_value, ssim_value = metrics.realblur_scores(pred, target)
    else:
        psnr_value, ssim_value = metrics.psnr(pred, target), metrics.ssim(pred, target, mode=ssim_mode)
    return ImageScore("", psnr_value, ssim_value)


def evaluate_pairs(
    pairs: Iterable[tuple[str, np.ndarray, np.ndarray]],
    protocol: str = "gopro",
    ssim_mode: str = "matlab",
    progress: bool = False,
    total: int | None = None,
) -> EvaluationResult:
    """Score (name, pred, target) tuples of (H, W, 3) uint8 RGB images.

    A failure on one image (size mismatch, failed alignment) raises ValueError naming it.
    """
    _check_options(protocol, ssim_mode)
    rows = []
    for name, pred, target in tqdm(pairs, desc=f"evaluate ({protocol})", unit="img", total=total, disable=not progress):
        try:
            score = score_pair(pred, target, protocol, ssim_mode)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
        rows.append(ImageScore(name, score.psnr, score.ssim))
    return EvaluationResult(protocol, "realblur" if protocol == "realblur" else ssim_mode, tuple(rows))


def evaluate_folders(
    pred_dir: str | os.PathLike[str],
    target_dir: str | os.PathLike[str],
    protocol: str = "gopro",
    ssim_mode: str = "matlab",
    progress: bool = True,
) -> EvaluationResult:
    """Pair ``pred_dir`` and ``target_dir`` by file stem, read with OpenCV (as RGB) and score.

    Raises FileNotFoundError for a missing folder, hidiff.data.PairingError (a ValueError) for
    files without a partner, ValueError for unreadable images (each names the file).
    """
    _check_options(protocol, ssim_mode)
    files = pair_by_name(pred_dir, target_dir, first_label="prediction", second_label="target")
    images = ((stem, read_rgb(pred), read_rgb(target)) for stem, pred, target in files)
    return evaluate_pairs(images, protocol, ssim_mode, progress=progress, total=len(files))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hidiff.evaluate",
        description="PSNR/SSIM of deblurred images against their targets, paired by file name.",
    )
    parser.add_argument("pred_dir", type=Path, help="folder of deblurred images")
    parser.add_argument("target_dir", type=Path, help="folder of sharp targets (same file names)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="gopro", help="gopro (GoPro, HIDE) or realblur")
    parser.add_argument(
        "--ssim",
        choices=SSIM_MODES,
        default=None,
        help="SSIM of the gopro protocol: matlab (default, as the paper) or per_channel",
    )
    parser.add_argument("--csv", type=Path, default=None, help="write per-image scores here")
    parser.add_argument("--json", type=Path, default=None, help="write per-image scores and means here")
    parser.add_argument("--compare", choices=sorted(PAPER_RESULTS), default=None, help="also print the paper's numbers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.protocol == "realblur" and args.ssim is not None:
        message = "--ssim applies to the gopro protocol only; realblur uses evaluate_realblur.py's SSIM"
        print(f"error: {message}", file=sys.stderr)
        return 2
    try:
        result = evaluate_folders(
            args.pred_dir, args.target_dir, args.protocol, args.ssim or "matlab", progress=not args.no_progress
        )
        if args.csv is not None:
            write_atomic(args.csv, result.csv_text())
        if args.json is not None:
            write_atomic(args.json, json.dumps(result.to_dict(), indent=2))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.describe())
    if args.compare is not None:
        paper_psnr, paper_ssim = PAPER_RESULTS[args.compare]
        print(
            f"paper, {args.compare}: PSNR {paper_psnr:.2f} dB  SSIM {paper_ssim:.3f}  "
            f"(difference {result.mean_psnr - paper_psnr:+.2f} dB, {result.mean_ssim - paper_ssim:+.4f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
