#!/usr/bin/env bash
# Every GPU test and benchmark of the project, in one call on a GPU machine (see docs/benchmarks.md).
#
#   bash bench/gpu_suite.sh OUT [STEP ...]
#
# Steps (default: all, in this order):
#   env      nvidia-smi and library versions
#   tests    the GPU tests (pytest -m gpu)
#   train    stage-2 training throughput of the GoPro preset (patch 256, batch 8)
#   export   fp16 ONNX graphs of the GoPro architecture (random weights) + TensorRT / TensorRT-RTX
#            plans where a TensorRT module is importable, else the trtexec lines
#   latency  bench/latency.py on every backend present, 256x256 / 1280x720 / 1920x1080, batch 1 and 4
#   default  the embedded demonstration model: latency at 1280x720 and a deblur of the sample
# Extra wheels (onnxruntime-gpu, tensorrt-rtx) installed under /tmp/wheelparts/site are used when present.
set -uo pipefail
out=${1:?usage: bash bench/gpu_suite.sh OUT [STEP ...]}
shift
steps=" ${*:-env tests train export latency default} "
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
[ -d /tmp/wheelparts/site ] && export PYTHONPATH="/tmp/wheelparts/site:${PYTHONPATH:-}"
status=0
step() { [[ "$steps" == *" $1 "* ]]; }
run() { echo "== $(date -u +%FT%TZ) $*"; "$@" || { echo "!! failed ($?): $*"; status=1; }; }

if step env; then
  { nvidia-smi; python3 - <<'PY'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))
for m in ("onnxruntime", "onnx", "onnxscript", "tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings", "cuda.bindings"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"), getattr(mod, "get_available_providers", lambda: "")())
    except Exception as exc:  # report, don't stop: this is an inventory
        print(m, "missing:", type(exc).__name__)
PY
  } > "$out/env.txt" 2>&1
  cat "$out/env.txt"
fi
step tests && run python3 -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$out/pytest_gpu.log"
step train && run python3 -m hidiff.train --benchmark --patch 256 --batch 8 --benchmark-iters 20 2>&1 | tee "$out/train_benchmark.log"
if step export; then
  run python3 -c "import torch; from hidiff import HIDiff; torch.manual_seed(0); HIDiff().save('/tmp/gopro_random.safetensors')"
  run python3 export/build_engines.py --weights /tmp/gopro_random.safetensors --precision fp16 --out /tmp/gopro_fp16 --force 2>&1 | tee "$out/build_engines.log"
fi
if step latency; then
  args=(--preset gopro --device cuda:0 --sizes 256x256,1280x720,1920x1080 --batches 1,4 --out "$out/latency")
  [ -f /tmp/gopro_fp16/manifest.json ] && args+=(--onnx /tmp/gopro_fp16 --plans /tmp/gopro_fp16 --backends tensorrt,onnxruntime-cuda,torch-fp16,torch-fp32)
  run python3 bench/latency.py "${args[@]}"
fi
if step default; then
  run python3 bench/latency.py --device cuda:0 --sizes 1280x720 --batches 1 --backends torch-fp16,torch-fp32 --out "$out/latency_default"
  run python3 -m runtime hidiff/samples/blurry.png "$out/sample_sharp.png" --device 0
fi
exit $status
