"""How far 8-bit graphs (INT8, FP8) drift from FP32, measured on real photographs on the CPU.

    python -m bench.int8_accuracy --out OUT [--weights W.safetensors] [--formats int8,int8-percentile,fp8]
                                  [--reuse-export]

Use it before offering an 8-bit engine: it answers "how many dB does quantization cost" with
ONNX Runtime's static quantization, the QDQ graphs TensorRT builds explicit INT8/FP8 engines from.

1. export the model's three graphs in float32 (the embedded demonstration model by default);
2. blur scikit-image's photographs as the demonstration model was trained (hidiff.data.synthetic_blur);
   the calibration photos are astronaut and chelsea, the held-out ones coffee, rocket, motorcycle;
3. record every graph's inputs while the FP32 graphs deblur 256x256 crops of the calibration photos
   (LE_DM's blur, each denoising step's z, cond and t, the Restormer's blur and prior);
4. per INT8 format: quantize every graph statically (QDQ, per-channel weights; ``int8``
   calibrates with MinMax, ``int8-percentile`` with the 99.999th percentile), then deblur the
   held-out photos (whole) with the 8-bit graphs and with the FP32 graphs, same z_T, and measure
   the PSNR of the 8-bit output against the FP32 output (8-bit RGB); also with only the
   Restormer 8-bit;
5. ``fp8``: E4M3 rounding simulated in PyTorch on the CPU: every convolution's and linear
   layer's weights (scaled per output channel) and inputs (scaled per tensor by their own
   maximum, which no static calibration beats) go through ``torch.float8_e4m3fn``; ONNX
   Runtime's FP8 calibration keeps every activation of the Restormer and does not fit 24 GB;
6. ``fp16`` for scale: the PyTorch model in float16 on the CPU against the same FP32 outputs.

Writes ``OUT/int8_accuracy.json`` (after each format) and prints one line per format.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATION_PHOTOS = ("astronaut", "chelsea")
HELD_OUT_PHOTOS = ("coffee", "rocket", "motorcycle")
CROP = 256
CROPS_PER_PHOTO = 4
SEED = 0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two (3, H, W) float images in [0, 1], after rounding to 8-bit as images are stored."""
    a8 = np.clip(np.round(a * 255.0), 0, 255)
    b8 = np.clip(np.round(b * 255.0), 0, 255)
    mse = float(np.mean((a8 - b8) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _blurred(names: Sequence[str], crop: int | None, per_photo: int) -> list[tuple[str, np.ndarray]]:
    """(name, (1, 3, H, W) float32 in [0, 1]) blurry images made from the named photographs."""
    from hidiff.data.synthetic_blur import make_pair, skimage_sharp_images

    photos = dict(skimage_sharp_images())
    out = []
    for name in names:
        for k in range(per_photo):
            rng = np.random.default_rng([SEED, k, len(name)])
            blurry, _, _ = make_pair(photos[name], rng, crop=crop, name=name)
            out.append((f"{name}_{k}", blurry.transpose(2, 0, 1)[None].astype(np.float32) / 255.0))
    return out


class _Recording:
    """An engine that keeps every feed it is given (the calibration inputs), as numpy arrays."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.contract = engine.contract
        self.feeds: list[dict[str, np.ndarray]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def infer(self, feeds: dict[str, Any], stream: Any = None) -> Any:
        self.feeds.append({k: np.array(v.cpu().numpy() if hasattr(v, "cpu") else v) for k, v in feeds.items()})
        return self.engine.infer(feeds)


def _deblur(engines: dict[str, Any], blur: np.ndarray, noise: np.ndarray, steps: int) -> np.ndarray:
    """(3, H, W) float32: ``blur`` (1, 3, H, W) through the engines on the runtime's pipeline, z_T ``noise``."""
    import torch

    from engines.pipeline import Pipeline

    pipeline = Pipeline(engines, torch.from_numpy(noise[0]), steps, backend="onnxruntime", cuda_graphs=False)
    return pipeline.run(torch.from_numpy(blur))[0].numpy()


def _to_e4m3(x: Any, dim: int | None = None) -> Any:
    """``x`` rounded to float8 E4M3 with a scale that maps its largest magnitude (per ``dim``
    slice, or overall) to E4M3's largest finite value, 448, and scaled back."""
    import torch

    amax = x.abs().amax(dim=[d for d in range(x.dim()) if d != dim], keepdim=True) if dim is not None else x.abs().max()
    scale = torch.clamp(amax, min=1e-12) / 448.0
    return (x / scale).to(torch.float8_e4m3fn).to(x.dtype) * scale


def _fp8_model(model: Any) -> Any:
    """A copy of ``model`` whose convolutions and linear layers see E4M3-rounded weights and inputs."""
    import copy

    import torch

    fp8 = copy.deepcopy(model).eval()
    for module in fp8.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            with torch.no_grad():
                module.weight.copy_(_to_e4m3(module.weight, dim=0))
            module.register_forward_pre_hook(lambda _, args: (_to_e4m3(args[0]), *args[1:]))
    return fp8


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over recorded feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._iter: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def main(argv: Sequence[str] | None = None) -> int:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from engines.contracts import graph_contracts
    from export.onnx_export import export_graphs
    from export.verify import cpu_engine
    from hidiff import default_model
    from hidiff.files import write_atomic
    from hidiff.model import HIDiff

    parser = argparse.ArgumentParser(prog="python bench/int8_accuracy.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=None, help="a HIDiff.save file (default: the embedded model)")
    parser.add_argument("--formats", default="fp16,int8,int8-percentile,fp8")
    parser.add_argument("--reuse-export", action="store_true", help="use OUT/fp32 from an earlier run")
    parser.add_argument("--crop", type=int, default=CROP, help=f"calibration crop side (default {CROP})")
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    args.out.mkdir(parents=True, exist_ok=True)

    model = HIDiff.load(args.weights) if args.weights else default_model()
    steps = model.schedule.num_timesteps
    fp32_dir = args.out / "fp32"
    fp32_dir.mkdir(exist_ok=True)
    if not args.reuse_export:
        start = time.perf_counter()
        for name, graph in export_graphs(model, "fp32", progress=False).items():
            onnx.save_model(graph.model, str(fp32_dir / f"{name}.onnx"))
        print(f"exported fp32 graphs in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    names = ("le_dm", "denoise_step", "restormer")
    contracts = graph_contracts(model.config.prior_tokens, model.config.prior_channels)
    fp32 = {name: cpu_engine(fp32_dir / f"{name}.onnx", contracts[name], "fp32") for name in names}

    # Calibration inputs: what each graph sees while the FP32 chain deblurs the calibration crops.
    recorders = {name: _Recording(engine) for name, engine in fp32.items()}
    rng = np.random.default_rng(SEED)
    for _, blur in _blurred(CALIBRATION_PHOTOS, args.crop, CROPS_PER_PHOTO):
        _deblur(recorders, blur, rng.standard_normal((1, *model.prior_shape)).astype(np.float32), steps)
    calibration = {name: recorder.feeds for name, recorder in recorders.items()}

    held_out = _blurred(HELD_OUT_PHOTOS, None, 1)
    noises = [rng.standard_normal((1, *model.prior_shape)).astype(np.float32) for _ in held_out]
    reference = [_deblur(fp32, blur, noise, steps) for (_, blur), noise in zip(held_out, noises)]

    methods = {
        "int8": (QuantType.QInt8, CalibrationMethod.MinMax, {}),
        "int8-percentile": (QuantType.QInt8, CalibrationMethod.Percentile, {"CalibPercentile": 99.999}),
    }
    results: dict[str, Any] = {
        "model": str(args.weights) if args.weights else "embedded demonstration model",
        "calibration": {"photos": list(CALIBRATION_PHOTOS), "crops": CROPS_PER_PHOTO, "size": args.crop,
                        "feeds": {k: len(v) for k, v in calibration.items()}},
        "held_out": [name for name, _ in held_out],
        "method": "onnxruntime.quantization.quantize_static, QDQ, per-channel weights",
        "formats": {},
    }
    if "fp16" in formats:
        import copy

        import torch

        half = copy.deepcopy(model).half().eval()
        start = time.perf_counter()
        with torch.no_grad():
            psnrs = {label: _psnr(half(torch.from_numpy(blur).half(), torch.from_numpy(noise).half())[0].float().numpy(),
                                  ref) for (label, blur), noise, ref in zip(held_out, noises, reference)}
        results["formats"]["fp16"] = {"psnr_vs_fp32_db": psnrs, "mean_psnr_vs_fp32_db": float(np.mean(list(psnrs.values()))),
                                      "method": "the PyTorch model in float16 on the CPU",
                                      "seconds": time.perf_counter() - start}
        write_atomic(args.out / "int8_accuracy.json", json.dumps(results, indent=2) + "\n")
        print(f"fp16: PSNR against FP32 {results['formats']['fp16']['mean_psnr_vs_fp32_db']:.2f} dB")
    if "fp8" in formats:
        import torch

        start = time.perf_counter()
        fp8 = _fp8_model(model)
        with torch.no_grad():
            psnrs = {label: _psnr(fp8(torch.from_numpy(blur), torch.from_numpy(noise))[0].numpy(), ref)
                     for (label, blur), noise, ref in zip(held_out, noises, reference)}
        results["formats"]["fp8"] = {"psnr_vs_fp32_db": psnrs, "mean_psnr_vs_fp32_db": float(np.mean(list(psnrs.values()))),
                                     "method": "E4M3 rounding of conv/linear weights (per output channel) and inputs "
                                               "(per tensor, own maximum), simulated in PyTorch",
                                     "seconds": time.perf_counter() - start}
        write_atomic(args.out / "int8_accuracy.json", json.dumps(results, indent=2) + "\n")
        print(f"fp8: PSNR against FP32 {results['formats']['fp8']['mean_psnr_vs_fp32_db']:.2f} dB")
    for fmt in (f for f in formats if f in methods):
        qtype, method, extra = methods[fmt]
        out_dir = args.out / fmt
        out_dir.mkdir(exist_ok=True)
        start = time.perf_counter()
        for name in names:
            prepared = out_dir / f"{name}.prep.onnx"
            quant_pre_process(str(fp32_dir / f"{name}.onnx"), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(out_dir / f"{name}.onnx"), _Reader(calibration[name]),
                            quant_format=QuantFormat.QDQ, activation_type=qtype, weight_type=qtype,
                            per_channel=True, calibrate_method=method, extra_options=extra)
        quantized = {name: cpu_engine(out_dir / f"{name}.onnx", contracts[name], "fp32") for name in names}
        psnrs = {}
        for (label, blur), noise, ref in zip(held_out, noises, reference):
            psnrs[label] = _psnr(_deblur(quantized, blur, noise, steps), ref)
        # The Restormer alone in 8 bits (the other graphs FP32): where the loss comes from.
        mixed = {**fp32, "restormer": quantized["restormer"]}
        restormer_only = {label: _psnr(_deblur(mixed, blur, noise, steps), ref)
                          for (label, blur), noise, ref in zip(held_out, noises, reference)}
        results["formats"][fmt] = {
            "psnr_vs_fp32_db": psnrs,
            "mean_psnr_vs_fp32_db": float(np.mean(list(psnrs.values()))),
            "restormer_only_psnr_vs_fp32_db": restormer_only,
            "restormer_only_mean_db": float(np.mean(list(restormer_only.values()))),
            "calibration_method": method.name,
            "seconds": time.perf_counter() - start,
        }
        write_atomic(args.out / "int8_accuracy.json", json.dumps(results, indent=2) + "\n")
        print(f"{fmt}: PSNR against FP32 {results['formats'][fmt]['mean_psnr_vs_fp32_db']:.2f} dB "
              f"(Restormer alone {results['formats'][fmt]['restormer_only_mean_db']:.2f} dB) on "
              f"{', '.join(psnrs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
