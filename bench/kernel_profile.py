"""Which CUDA kernels take a graph's GPU time, for any backend (PyTorch, ONNX Runtime, TensorRT).

    python bench/kernel_profile.py --backend onnxruntime-cuda --onnx DIR --graph restormer --size 1280x720
    python bench/kernel_profile.py --backend torch-fp16-nhwc --preset gopro --graph restormer --size 1280x720

The graph runs through the engine interface on device-resident inputs (a natural image, unit
Gaussian prior tokens); after warm-up, ``torch.profiler`` records the CUDA kernels of a few runs
through CUPTI, which sees every kernel of the process, also those ONNX Runtime and TensorRT
launch. Prints the kernels by total GPU time; ``--out`` keeps the table (text) and a Chrome trace.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import torch  # noqa: E402

from bench.backends import BENCH_BACKENDS, open_bench_backend  # noqa: E402
from bench.inputs import ImageSize, add_model_arguments, load_model, model_choice_from_args, natural_frames  # noqa: E402
from hidiff.files import write_atomic  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/kernel_profile.py", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--backend", default="torch-fp16-nhwc", choices=tuple(BENCH_BACKENDS))
    parser.add_argument("--onnx", type=Path, default=None, help="ONNX export (onnxruntime-*) or plans (tensorrt)")
    parser.add_argument("--graph", default="restormer", choices=("le_dm", "restormer"))
    parser.add_argument("--size", type=ImageSize.parse, default=ImageSize.parse("1280x720"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
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
    table = prof.key_averages().table(sort_by="device_time_total", row_limit=args.top, max_name_column_width=90)
    title = f"{args.backend} {args.graph} {args.size.label}, {args.runs} runs, {torch.cuda.get_device_name(0)}"
    print(title)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out / f"kernels_{args.backend}_{args.graph}_{args.size.label}.txt", title + "\n" + table)
        prof.export_chrome_trace(str(args.out / f"trace_{args.backend}_{args.graph}_{args.size.label}.json"))
    engines.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
