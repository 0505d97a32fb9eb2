#!/usr/bin/env bash
# Every GPU test and benchmark of the project, in one call on a GPU machine (see docs/benchmarks.md).
#
#   bash bench/gpu_suite.sh OUT [STEP ...]
#
# Steps, in this order (default: env tests export latency ortgraph aligned fused norms runtime train compile
# default; ddp, trainspeed, aoti, agreement, blocks, counters, compare, profile and demo run when named):
#   env       nvidia-smi and library versions
#   tests     the GPU tests (pytest -m gpu; GPU_TESTS names files or folders, default tests;
#             GPU_TEST_WORKERS=N runs them in N pytest-xdist processes; a test that runs cases in
#             processes of their own appends each one's output to OUT/cases.log as it ends)
#   export    fp16 ONNX graphs of the GoPro architecture (random weights, seed 0) in /tmp/gopro_fp16,
#             TensorRT / TensorRT-RTX plans where a TensorRT module is importable (else the trtexec
#             lines), and an attempt to load the plans (TensorRT-RTX refuses compute capability 9.0)
#   latency   bench/latency.py on every backend present, 256x256 / 1280x720 / 1920x1080, batch 1 and 4
#   runtime   bench/runtime_checks.py: deblur() against its engines' GPU times, the CUDA-graph loop,
#             a 4K frame through tiling, the 10 000-frame stream() soak
#   train     stage-2 training throughput of the GoPro preset (patch 256, batch 8)
#   ddp       a 2-GPU torchrun of the demonstration model's stage 1 (eager, 100 iterations, issue 3's
#             acceptance run); skipped with a message on a machine with fewer than 2 GPUs
#   trainspeed  the demonstration model's training step (patch 128, batch 32), both stages, with and
#             without cuDNN autotuning, channels-last and torch.compile
#   ortgraph  ONNX Runtime CUDA with and without its CUDA graph of the denoising step, beside eager
#             .half(), 1280x720 and 1920x1080, batch 1 (two runs of bench/latency.py on one machine)
#   aligned   the Restormer with and without zero-padded tensor-core channels (hidiff.aligned_channels),
#             compiled and eager, beside ONNX Runtime and eager .half(), 1280x720 batch 1, and
#             torch._dynamo.explain's graph breaks of the Restormer
#   compile   torch.compile FP16 (channels-last, padded channels) at 256x256, 1280x720, 1920x1080,
#             batch 1 and 4, beside eager .half() (COMPILE_SIZES / COMPILE_BATCHES choose fewer)
#   fused     engines.kernels.gated_dwconv's fused GDFN convolution and gate (its GPU tests are in the
#             tests step): the kernel against cuDNN + inductor's gate at the shapes of a 1280x720 and a 1920x1080 frame
#             (bench/dwconv_kernels.py), the Restormer with and without it, compiled and eager, beside
#             eager .half() and FP32, 1280x720 batch 1; then compiled with it, without it and .half()
#             at 1920x1080 batch 1
#   norms     engines.kernels.norm_matmul's LayerNorms and residuals inside the 1x1 projections, and
#             engines.cuda_graphs' CUDA graph per shape: the kernels against PyTorch's at a 1280x720
#             frame's shapes with a tile sweep (bench/norm_matmul_kernels.py), inductor's code for one
#             block with and without them (bench/block_code.py), then the model with each and both,
#             beside the fused GDFN model they extend: 1280x720 then 1920x1080, batch 1 (NORMS_720P
#             and NORMS_1080P name other backend lists)
#   aoti      CUDA FP16 AOTInductor packages of the GoPro architecture (random weights, seed 0), dynamic and,
#             as export/build_engines.py writes them, for 1280x720 (AOTI_SHAPES, BxHxW; empty: dynamic only), with the fused Triton kernels
#             (AOTI_FUSED=0: without), in AOTI_DIR (default .gpu_work/aoti, git-ignored: a
#             build cut off by a call's time limit goes on in the next call on the same machine, reusing
#             the packages done), then bench/aoti_start.py: process start to the first frame, steady
#             state and peak memory of the packages, of the dynamic packages alone and of the just-in-time
#             fastest form, and PSNR against eager FP32, at both sizes (AOTI_FORMS names fewer forms;
#             AOTI_BUILD_ONLY=1 stops after the build; AOTI_PROFILE=1 adds each form's GPU time by kind of
#             kernel per size to the log, the kernel lists in .gpu_work/aoti_profile)
#   agreement bench/graph_agreement.py at 1920x1080: each graph of the FP16 kernels, through their opaque ops and
#             their packaged forms, and of the packages in AOTI_DIR where present, against eager FP32
#   blocks    the whole-block kernels against the per-operation kernels at the shapes of a 1280x720 and a
#             1920x1080 frame: engines.kernels.gdfn_block's feed-forward half (bench/gdfn_kernels.py) and
#             engines.kernels.mdta_block's attention half in two passes (bench/mdta_kernels.py)
#   counters  Nsight Compute's counters (speed of light, memory, occupancy, warp stalls) of one launch
#             of each Triton kernel and of cuDNN's depthwise convolution at a 1280x720 frame's largest
#             shapes (bench/kernel_counters.py)
#   compare   one bench/latency.py case on this tree, then on the tree in BASELINE (a folder holding an
#             earlier commit, e.g. `git archive COMMIT | tar -x -C .baseline`), one right after the other on
#             the same machine: COMPARE_BACKENDS (default torch-compile-fp16-fused-norms-graphs) at
#             COMPARE_SIZE (default 1280x720), batch 1
#   profile   bench/kernel_profile.py: the CUDA kernels of the compiled FP16 Restormer with the fused
#             GDFN gate at 1280x720 (PROFILE_BACKEND picks another bench backend, PROFILE_ARTIFACTS
#             the folder of its artifacts; the AOTInductor packages: AOTI_PROFILE=1 in the aoti step)
#   default   the embedded demonstration model: latency at 1280x720 and a deblur of the sample
#   demo      train the demonstration model (python -m hidiff.train_default, about 2 x 8 minutes) on
#             DEMO_NPROC GPUs (torchrun, default 1); DEMO_ARGS adds arguments (--stop-after-stage1,
#             --stage1 WEIGHTS to run the two stages in two calls); DEMO_DIR is its work folder
#             (default /tmp/demo)
# Extra wheels (onnxruntime-gpu, tensorrt-rtx) installed under /tmp/wheelparts/site are used when present.
# Each step writes under OUT; the export step's graphs stay in /tmp/gopro_fp16 for the later steps.
set -uo pipefail
out=${1:?usage: bash bench/gpu_suite.sh OUT [STEP ...]}
shift
steps=" ${*:-env tests export latency ortgraph aligned fused norms runtime train compile default} "
mkdir -p "$out"
out=$(cd "$out" && pwd)  # absolute: the compare step runs from another folder
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1  # a crash prints the Python stack of each thread
# The project's packages without installing it (python3 bench/x.py puts bench/ first on sys.path, not the root).
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
[ -d /tmp/wheelparts/site ] && export PYTHONPATH="/tmp/wheelparts/site:$PYTHONPATH"
graphs=/tmp/gopro_fp16
status=0
step() { [[ "$steps" == *" $1 "* ]]; }
run() { echo "== $(date -u +%FT%TZ) $*"; "$@" || { echo "!! failed ($?): $*"; status=1; }; }
ort_args=()
[ -f "$graphs/manifest.json" ] && ort_args=(--onnx "$graphs")

if step env; then
  { nvidia-smi; python3 - <<'PY'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "device", torch.cuda.get_device_name(0), "cc", torch.cuda.get_device_capability(0))
for m in ("onnxruntime", "onnx", "onnxscript", "polygraphy", "tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings",
          "cuda.bindings", "cupy", "triton", "ray", "pyarrow", "pandas", "msgpack", "jsonschema", "click",
          "requests", "yaml", "skimage", "cv2", "safetensors", "tqdm", "matplotlib", "psutil"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"), getattr(mod, "get_available_providers", lambda: "")())
    except Exception as exc:  # report, don't stop: this is an inventory
        print(m, "missing:", type(exc).__name__)
PY
  } > "$out/env.txt" 2>&1
  cat "$out/env.txt"
fi
# shellcheck disable=SC2086  # GPU_TESTS is a list of paths; GPU_TEST_WORKERS, optional, adds "-n N"
# HIDIFF_CASE_LOG: tests that run cases in processes of their own append each case's output to it.
step tests && HIDIFF_CASE_LOG="$out/cases.log" run python3 -m pytest -m gpu -v --durations=30 -p no:cacheprovider \
  ${GPU_TEST_WORKERS:+-n $GPU_TEST_WORKERS} \
  ${GPU_TESTS:-tests} 2>&1 | tee "$out/pytest_gpu.log"
if step export; then
  run python3 -c "import torch; from hidiff import HIDiff; torch.manual_seed(0); HIDiff().save('/tmp/gopro_random.safetensors')"
  run python3 export/build_engines.py --weights /tmp/gopro_random.safetensors --precision fp16 --out "$graphs" --force \
    2>&1 | tee "$out/build_engines.log"
  cp "$graphs"/*.json "$out/" 2>/dev/null
  [ -f "$graphs/manifest.json" ] && ort_args=(--onnx "$graphs")
  if ls "$graphs"/*.plan >/dev/null 2>&1; then
    python3 - "$graphs" <<'PY' 2>&1 | tee "$out/load_plans.log"
import sys
from engines.registry import open_engines
try:
    open_engines("tensorrt", artifacts=sys.argv[1], device="cuda:0")
    print("loaded the plans")
except Exception as exc:  # the answer wanted on compute capability 9.0 is a named refusal
    print(f"refused: {type(exc).__name__}: {exc}")
PY
  fi
fi
if step latency; then
  backends=torch-fp16-nhwc,torch-fp16,torch-fp32
  [ ${#ort_args[@]} -gt 0 ] && backends=onnxruntime-cuda,onnxruntime-cuda-nhwc,$backends
  run python3 bench/latency.py --preset gopro --device cuda:0 --sizes 256x256,1280x720,1920x1080 --batches 1,4 \
    --min-iters 5 --backends "$backends" "${ort_args[@]}" --out "$out/latency"
fi
step runtime && run python3 bench/runtime_checks.py --preset gopro --device cuda:0 "${ort_args[@]}" --out "$out/runtime" \
  2>&1 | tee "$out/runtime_checks.log"
if step ortgraph; then
  for mode in graph plain; do
    flag=(); [ "$mode" = plain ] && flag=(--no-cuda-graph)
    run python3 bench/latency.py --preset gopro --device cuda:0 --sizes 1280x720,1920x1080 --batches 1 --min-iters 5 \
      --backends onnxruntime-cuda,torch-fp16 "${ort_args[@]}" "${flag[@]}" --out "$out/ortgraph_$mode"
  done
fi
if step aligned; then
  run python3 bench/compile_breaks.py --preset gopro --size 256x256 2>&1 | tee "$out/compile_breaks.log"
  run python3 bench/latency.py --preset gopro --device cuda:0 --sizes 1280x720 --batches 1 --min-iters 5 --max-case-s 15 \
    --backends torch-compile-fp16,torch-compile-fp16-unaligned,onnxruntime-cuda,torch-fp16-nhwc,torch-fp16-nhwc-unaligned,torch-fp16 \
    "${ort_args[@]}" --out "$out/aligned"
fi
step train && run python3 -m hidiff.train --benchmark --patch 256 --batch 8 --benchmark-iters 20 2>&1 | tee "$out/train_benchmark.log"
if step ddp; then
  if [ "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    run python3 -m torch.distributed.run --standalone --nproc_per_node=2 -m hidiff.train hidiff/options/default_small_s1.yml \
      train.compile=false train.total_iter=100 "train.progressive.iters=[100]" "train.progressive.patch_sizes=[128]" \
      "train.progressive.batch_sizes=[32]" "train.scheduler.periods=[100]" train.val_every=100000 train.out_dir=/tmp/ddp \
      data.num_workers=6 train.max_minutes=3 2>&1 | tee "$out/ddp.log"
    cp /tmp/ddp/train_log.jsonl "$out/ddp_log.jsonl" 2>/dev/null
  else
    echo "ddp: skipped, this machine has fewer than 2 GPUs"
  fi
fi
if step trainspeed; then
  # The demonstration model's training step (batch 32, patch 128) per GPU: cuDNN autotuning,
  # channels-last and torch.compile one at a time, both stages.
  for stage in 1 2; do
    for flags in "--no-cudnn-benchmark" "" "--channels-last" "--compile" "--compile --channels-last"; do
      # shellcheck disable=SC2086  # flags is a list of options
      run python3 -m hidiff.train hidiff/options/default_small_s$stage.yml --benchmark --benchmark-stage $stage \
        --patch 128 --batch 32 --benchmark-iters 40 $flags 2>&1 | grep -v "^benchmark" | tee -a "$out/train_speed.log"
    done
  done
fi
# Each new shape compiles again (40-170 s): the six cases take more than one 10-minute call.
step compile && run python3 bench/latency.py --preset gopro --device cuda:0 \
  --sizes "${COMPILE_SIZES:-256x256,1280x720,1920x1080}" --batches "${COMPILE_BATCHES:-1,4}" --min-iters 3 \
  --max-case-s 12 --backends torch-compile-fp16,torch-fp16 --out "$out/compile"
if step fused; then
  for size in 1280x720 1920x1080; do
    run python3 bench/dwconv_kernels.py --preset gopro --size $size --out "$out/dwconv_$size" 2>&1 | tail -n 12
  done
  run python3 bench/latency.py --preset gopro --device cuda:0 --sizes 1280x720 --batches 1 --min-iters 5 --max-case-s 10 \
    --backends torch-compile-fp16-fused,torch-compile-fp16,torch-fp16-nhwc-fused,torch-fp16-nhwc,torch-fp16,torch-fp32 \
    --out "$out/fused_720p"
  run python3 bench/latency.py --preset gopro --device cuda:0 --sizes 1920x1080 --batches 1 --min-iters 3 --max-case-s 10 \
    --backends torch-compile-fp16-fused,torch-compile-fp16,torch-fp16 --out "$out/fused_1080p"
fi
if step norms; then
  run python3 bench/norm_matmul_kernels.py --preset gopro --size 1280x720 --sweep norm --out "$out/norm_kernels" 2>&1 | tail -n 24
  run python3 bench/block_code.py --level decoder_level1 --size 1280x720 --out "$out/block_code" 2>&1 | tail -n 8
  run python3 bench/latency.py --preset gopro --device cuda:0 --sizes 1280x720 --batches 1 --min-iters 5 --max-case-s 6 \
    --backends "${NORMS_720P:-torch-compile-fp16-fused-norms-graphs,torch-compile-fp16-fused-norms,torch-compile-fp16-fused-graphs,torch-compile-fp16-fused}" \
    --out "$out/norms_720p"
  run python3 bench/latency.py --preset gopro --device cuda:0 --sizes 1920x1080 --batches 1 --min-iters 3 --max-case-s 8 \
    --backends "${NORMS_1080P:-torch-compile-fp16-fused-norms-graphs,torch-compile-fp16-fused}" --out "$out/norms_1080p"
fi
if step aoti; then
  aoti_dir=${AOTI_DIR:-$PWD/.gpu_work/aoti}
  mkdir -p "$aoti_dir"
  weights="$aoti_dir/gopro_random.safetensors"
  [ -f "$weights" ] || run python3 -c "import sys, torch; from hidiff import HIDiff; from hidiff.config import preset
torch.manual_seed(0); HIDiff(preset('gopro')).eval().save(sys.argv[1])" "$weights"
  # Shapes as the engines see them: padded to multiples of 8 (1080 is one).
  run python3 -c "import sys; from hidiff import HIDiff; from export.aoti_package import build_aoti_packages
shapes = [tuple(map(int, s.split('x'))) for s in sys.argv[4].split()]
build_aoti_packages(HIDiff.load(sys.argv[1]), sys.argv[2], 'cuda', 'fp16', shapes=shapes,
                    fuse_kernels=sys.argv[3] == '1', log=print)" "$weights" "$aoti_dir" "${AOTI_FUSED:-1}" \
    "${AOTI_SHAPES-1x720x1280}" 2>&1 | tee -a "$out/aoti_build.log"
  profile=(); [ "${AOTI_PROFILE:-0}" = 1 ] && profile=(--profile "$PWD/.gpu_work/aoti_profile")
  # shellcheck disable=SC2086  # AOTI_FORMS is a list of forms
  [ "${AOTI_BUILD_ONLY:-0}" = 1 ] || run python3 bench/aoti_start.py --engines "$aoti_dir" --weights "$weights" \
    --device cuda:0 --sizes 1280x720 1920x1080 --forms ${AOTI_FORMS:-aoti aoti-dynamic jit} "${profile[@]}" 2>&1 \
    | tee "$out/aoti_start.log"
fi
if step agreement; then
  aoti_dir=${AOTI_DIR:-$PWD/.gpu_work/aoti}
  agree=(--preset gopro)
  ls "$aoti_dir"/*.pt2 >/dev/null 2>&1 && agree=(--weights "$aoti_dir/gopro_random.safetensors" --backend aoti --engines "$aoti_dir")
  run python3 bench/graph_agreement.py "${agree[@]}" --size 1920x1080 --device cuda:0 2>&1 | tee -a "$out/graph_agreement.log"
fi
if step blocks; then
  for size in 1280x720 1920x1080; do
    run python3 bench/gdfn_kernels.py --preset gopro --size $size --out "$out/gdfn_$size" 2>&1 | tail -n 14
    run python3 bench/mdta_kernels.py --preset gopro --size $size --out "$out/mdta_$size" 2>&1 | tail -n 14
  done
fi
if step counters; then
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
  run "${ncu:-ncu}" --profile-from-start off --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
    python3 bench/kernel_counters.py --size 1280x720 > "$out/kernel_counters.txt" 2>&1
  tail -n 5 "$out/kernel_counters.txt"
fi
if step compare; then
  baseline=${BASELINE:?the compare step needs BASELINE, the folder of the earlier tree}
  for tree in new old; do
    dir=.; [ "$tree" = old ] && dir=$baseline
    # Each tree imports its own packages: its folder first on the path.
    (cd "$dir" && export PYTHONPATH="$PWD:$PYTHONPATH" && run python3 bench/latency.py --preset gopro --device cuda:0 --sizes "${COMPARE_SIZE:-1280x720}" \
      --batches 1 --min-iters 5 --max-case-s 6 --backends "${COMPARE_BACKENDS:-torch-compile-fp16-fused-norms-graphs}" \
      --out "$out/compare_$tree" 2>&1 | tee "$out/compare_$tree.log") || status=1
  done
fi
# shellcheck disable=SC2086  # PROFILE_ARTIFACTS, optional, adds "--onnx DIR"
step profile && run python3 bench/kernel_profile.py --backend "${PROFILE_BACKEND:-torch-compile-fp16-fused}" --preset gopro \
  --size 1280x720 --runs 2 --top 60 ${PROFILE_ARTIFACTS:+--onnx $PROFILE_ARTIFACTS} --out "$out/profile" 2>&1 \
  | tee "$out/kernel_profile.log"
if step default; then
  run python3 bench/latency.py --device cuda:0 --sizes 1280x720 --batches 1 --backends torch-fp16-nhwc,torch-fp16,torch-fp32 \
    --out "$out/latency_default"
  run python3 -m runtime hidiff/samples/blurry.png "$out/sample_sharp.png" --device 0
fi
if step demo; then
  demo=${DEMO_DIR:-/tmp/demo}  # one folder per job: several demo jobs can share a machine
  # shellcheck disable=SC2086  # DEMO_ARGS is a list of arguments
  run python3 -m torch.distributed.run --standalone --nproc_per_node "${DEMO_NPROC:-1}" -m hidiff.train_default "$demo" --workers 12 \
    ${DEMO_ARGS:-} 2>&1 | tee "$out/train_default.log"
  cp "$demo/default.safetensors" "$demo/eval.json" "$out/" 2>/dev/null
  # Keep every output file under 16 MiB (some remote runners cap the size they send back): the float32
  # weights of each stage travel in two parts (cat stage1.safetensors.part* > stage1.safetensors).
  for stage in stage1 stage2; do
    [ -f "$demo/$stage/model.safetensors" ] && split -b 15m -d "$demo/$stage/model.safetensors" "$out/$stage.safetensors.part"
    cp "$demo/$stage/train_log.jsonl" "$out/${stage}_log.jsonl" 2>/dev/null
  done
fi
exit $status
