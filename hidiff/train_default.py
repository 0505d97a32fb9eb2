"""Train the embedded demonstration model: ``python -m hidiff.train_default OUT``.

The recipe (about 8 minutes on one H100):
    1. held-out test pairs: synthetic blur of the photos the training never sees (OUT/data/test)
    2. stage 1 (hidiff/options/default_small_s1.yml): Restormer + LE on synthetic blur made on
       the fly from scikit-image's other photos
    3. stage 2 (default_small_s2.yml), starting from stage 1's Restormer and LE
    4. export OUT/default.safetensors: float16, without the stage-1 encoder
    5. evaluate the export on the held-out pairs: PSNR of the blurry input and of the output

Copy OUT/default.safetensors to hidiff/weights/default.safetensors to ship it.

Under ``torchrun --nproc_per_node N -m hidiff.train_default OUT`` both stages train with DDP on N
GPUs (each GPU takes the configs' batch size); rank 0 makes the test pairs, exports and evaluates.
The stages can run in separate invocations (for example in two time-limited GPU jobs):
``--stop-after-stage1`` ends after stage 1 (OUT/stage1/model.safetensors), and
``--stage1 WEIGHTS`` skips stage 1 and starts stage 2 from those weights (a stage-2 export,
OUT/stage2/model.safetensors, continues that stage 2).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hidiff.data.paired import folder_pairs, read_rgb
from hidiff.files import write_atomic
from hidiff.metrics import psnr, to_uint8
from hidiff.model import HIDiff
from hidiff.train import run
from hidiff.training import distributed
from hidiff.training.config import SyntheticConfig, load_run_config
from hidiff.training.data import blur_recipe
from hidiff.training.weights import export_weights

OPTIONS = Path(__file__).with_name("options")
STAGE1_OPTIONS = OPTIONS / "default_small_s1.yml"
STAGE2_OPTIONS = OPTIONS / "default_small_s2.yml"
TEST_SEED = 2024
EVAL_NOISE_SEED = 0


def make_test_pairs(out_dir: Path, synthetic: SyntheticConfig, per_image: int) -> Path:
    """Synthetic pairs of the held-out photos only (whole photos, the training's degradation
    ranges), under ``out_dir``."""
    from hidiff.data.synthetic_blur import (
        make_pairs,
        skimage_sharp_images,
        split_holdout,
    )

    _, test = split_holdout(skimage_sharp_images(), list(synthetic.holdout))
    make_pairs(test, out_dir, per_image=per_image, seed=TEST_SEED, recipe=blur_recipe(synthetic), progress=True)
    return out_dir


@torch.no_grad()
def evaluate_gain(weights: Path, test_dir: Path, device: torch.device) -> dict[str, object]:
    """PSNR (8-bit RGB) of each blurry input and of the model's output against the sharp image."""
    model = HIDiff.load(weights).to(device)
    generator = torch.Generator(device=device).manual_seed(EVAL_NOISE_SEED)
    rows = []
    for pair in folder_pairs(test_dir / "input", test_dir / "target"):
        blur, sharp = read_rgb(pair.blur), read_rgb(pair.sharp)
        x = torch.from_numpy(blur.transpose(2, 0, 1).copy()).float().div(255.0)[None].to(device)
        out = to_uint8(model(x, generator=generator)[0].permute(1, 2, 0).float().cpu().numpy())
        rows.append({"name": pair.name, "psnr_input": psnr(blur, sharp), "psnr_output": psnr(out, sharp)})
    mean_in = float(np.mean([r["psnr_input"] for r in rows]))
    mean_out = float(np.mean([r["psnr_output"] for r in rows]))
    return {"pairs": rows, "psnr_input": mean_in, "psnr_output": mean_out, "gain_db": mean_out - mean_in}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hidiff.train_default", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--test-per-image", type=int, default=8, help="held-out test pairs per held-out photo")
    parser.add_argument("--min-gain", type=float, default=3.0, help="exit with status 1 below this PSNR gain (dB)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the configs')")
    parser.add_argument("--stage1", type=Path, default=None, metavar="WEIGHTS",
                        help="skip stage 1: start stage 2 from these stage-1 weights (Restormer and LE); "
                             "a stage-2 export (OUT/stage2/model.safetensors) continues that stage 2")
    parser.add_argument("--stage1-init", type=Path, default=None, metavar="WEIGHTS",
                        help="start stage 1 from these weights (for example a stage 1 of another blur recipe)")
    parser.add_argument("--stop-after-stage1", action="store_true",
                        help="end after stage 1 (its weights: OUT/stage1/model.safetensors)")
    parser.add_argument("overrides", nargs="*", help="overrides applied to both stages, e.g. train.max_minutes=1")
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.stage1 is not None and args.stop_after_stage1:
        print("error: --stage1 (skip stage 1) and --stop-after-stage1 leave nothing to train", file=sys.stderr)
        return 2
    if args.stage1 is not None and args.stage1_init is not None:
        print("error: --stage1 skips stage 1, so --stage1-init has nothing to start", file=sys.stderr)
        return 2
    for given in (args.stage1, args.stage1_init):
        if given is not None and not given.is_file():
            print(f"error: weights {given} not found", file=sys.stderr)
            return 2
    out: Path = args.out
    extra = list(args.overrides) + ([f"data.num_workers={args.workers}"] if args.workers is not None else [])
    # One process group for both stages (run() leaves a group it did not start alone).
    try:
        stage1_defaults = load_run_config(STAGE1_OPTIONS, extra)
        ctx = distributed.setup(stage1_defaults.train.device)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _train_export_evaluate(args, out, extra, stage1_defaults.data.synthetic, ctx)
    finally:
        distributed.cleanup()


def _train_export_evaluate(args: argparse.Namespace, out: Path, extra: list[str], synthetic: SyntheticConfig | None,
                           ctx: distributed.DistContext) -> int:
    try:
        # 1. held-out test pairs (rank 0 writes them, the others wait)
        if synthetic is None:
            raise ValueError(f"{STAGE1_OPTIONS} has no data.synthetic source to hold test photos out of")
        test_dir = out / "data" / "test"
        if ctx.is_main:
            make_test_pairs(test_dir, synthetic, args.test_per_image)
        distributed.barrier(ctx)
        val = [f"data.val.input={test_dir / 'input'}", f"data.val.target={test_dir / 'target'}"]

        # 2. stage 1
        stage1_weights = args.stage1
        if stage1_weights is None:
            stage1_weights = out / "stage1" / "model.safetensors"
            init = [f"train.init={args.stage1_init}"] if args.stage1_init is not None else []
            s1 = load_run_config(STAGE1_OPTIONS, [f"train.out_dir={out / 'stage1'}", *init, *val, *extra])
            stage1 = run(s1, export_path=stage1_weights, progress=ctx.is_main)
            if ctx.is_main:
                print(f"stage 1: {stage1.iteration} iterations; validation {stage1.last_validation}")
            if args.stop_after_stage1:
                if ctx.is_main:
                    print(f"stage-1 weights: {stage1_weights}; continue with --stage1 {stage1_weights}")
                return 0

        # 3. stage 2 from stage 1's Restormer and LE
        s2 = load_run_config(STAGE2_OPTIONS, [f"train.out_dir={out / 'stage2'}", f"train.init={stage1_weights}",
                                              *val, *extra])
        stage2 = run(s2, progress=ctx.is_main)
        if not ctx.is_main:
            return 0
        print(f"stage 2: {stage2.iteration} iterations; validation {stage2.last_validation}")

        # 4. the shipped file: float16, no stage-1 encoder
        weights = export_weights(stage2.model, out / "default.safetensors", fp16=True, include_stage1_encoder=False,
                                 training={"recipe": "hidiff.train_default", "world_size": ctx.world_size,
                                           "stage1_weights": str(stage1_weights),
                                           "stage2_iterations": stage2.iteration})
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # 5. evaluation on the held-out pairs
    device = next(stage2.model.parameters()).device
    result = evaluate_gain(weights, test_dir, device)
    write_atomic(out / "eval.json", json.dumps(result, indent=2).encode("utf-8"))
    print(f"{'pair':<24} {'input dB':>9} {'output dB':>10}")
    for row in result["pairs"]:  # type: ignore[attr-defined]
        print(f"{row['name']:<24} {row['psnr_input']:9.2f} {row['psnr_output']:10.2f}")
    size_mb = weights.stat().st_size / 1e6
    print(f"mean: input {result['psnr_input']:.2f} dB -> output {result['psnr_output']:.2f} dB "
          f"(gain {result['gain_db']:+.2f} dB); {weights} ({size_mb:.1f} MB)")
    if result["gain_db"] < args.min_gain:  # type: ignore[operator]
        print(f"gain below the {args.min_gain} dB goal", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
