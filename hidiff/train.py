"""Train HI-Diff: ``python -m hidiff.train CONFIG [key.path=value ...]`` (console script ``hidiff-train``).

CONFIG is our YAML (hidiff/options/*.yml) or an official option file (options/train/GoPro_S1.yml).
One invocation trains one stage; under torchrun it trains on every GPU with DDP.

    python -m hidiff.train hidiff/options/default_small_s1.yml train.out_dir=runs/s1
    python -m hidiff.train hidiff/options/default_small_s2.yml train.init=runs/s1/model.safetensors
    python -m hidiff.train CONFIG --resume auto          # continue from the newest checkpoint
    torchrun --nproc_per_node 4 -m hidiff.train CONFIG   # one process per GPU
    python -m hidiff.train --benchmark [CONFIG]           # stage-2 iterations/s, patch 256, batch 8

Each iteration:
    1. (patch, batch) of the progressive stage; the next batch of the resumable sample stream
    2. the stage's objective (hidiff.training.stages) under bf16 autocast on GPU
    3. backward, clip the global gradient norm (0.01), AdamW step, cyclic cosine lr step
    4. every log_every: losses (mean over ranks) to OUT/train_log.jsonl; every val_every:
       PSNR/SSIM on the validation folder; every checkpoint_every: a full-resume checkpoint
At the end (or when train.max_minutes is spent) a last checkpoint and the exported weights.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from hidiff.checkpoint import load_strict
from hidiff.config import HIDiffConfig, preset
from hidiff.model import HIDiff
from hidiff.training import checkpointing, distributed
from hidiff.training.config import (
    LossConfig,
    OptimizerConfig,
    RunConfig,
    load_run_config,
)
from hidiff.training.data import (
    BatchStream,
    build_train_dataset,
    default_workers,
    sample_seed,
    validation_pairs,
)
from hidiff.training.log import LOG_NAME, JsonlLog
from hidiff.training.optim import CosineAnnealingRestartCyclicLR, make_optimizer
from hidiff.training.stages import build_objective
from hidiff.training.validate import validate
from hidiff.training.weights import export_weights, load_init_weights

BUDGET_CHECK_EVERY = 10  # iterations between the ranks' checks of train.max_minutes


@dataclass
class TrainResult:
    model: HIDiff
    iteration: int
    stopped_early: bool
    export_path: Path | None
    checkpoint_path: Path | None
    last_validation: dict[str, float] | None


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """"auto": bf16 autocast on CUDA, full fp32 on CPU; "bf16"; "fp32"."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _stage_noise(model: HIDiff, batch: int, seed: int, iteration: int, rank: int, device: torch.device) -> torch.Tensor:
    """Stage 2's forward-process noise eps (batch, N, C'): a function of (seed, iteration, rank)
    only, so a resumed run draws exactly what the uninterrupted run drew."""
    g = torch.Generator(device=device).manual_seed(sample_seed(seed, iteration, rank))
    return torch.randn((batch, *model.prior_shape), generator=g, device=device)


def _layout(channels_last: bool, device: torch.device) -> torch.memory_format:
    """channels-last on CUDA when asked (cuDNN's fast depthwise and 1x1 kernels); contiguous on CPU."""
    return torch.channels_last if channels_last and device.type == "cuda" else torch.contiguous_format


def _match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each restored optimizer state tensor its parameter's memory layout: a checkpoint of a run
    with another ``train.channels_last`` holds them in the other layout, and the fused AdamW step
    pairs the tensors element by element in memory order."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _compiled(module: torch.nn.Module, compile_: bool, device: torch.device) -> torch.nn.Module:
    """torch.compile of the step module (forward and backward) on CUDA, static shapes: one graph per
    patch size of the progressive schedule rather than one slower dynamic graph."""
    if not compile_ or device.type != "cuda":
        return module
    return torch.compile(module, dynamic=False)  # type: ignore[return-value]


def _train_step(step_module: torch.nn.Module, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                grad_clip: float | None, autocast: Callable[[], Any], blur: torch.Tensor, sharp: torch.Tensor,
                noise: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """One optimisation step; ``step_module`` is the stage objective or its DDP wrapper."""
    with autocast():
        losses = step_module(blur, sharp, noise)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return losses


def _check_resume(state: dict[str, Any], config: RunConfig, path: Path) -> None:
    if state["stage"] != config.train.stage:
        raise ValueError(f"--resume {path}: a stage-{state['stage']} checkpoint, but this is stage {config.train.stage}")
    saved, current = state["config"].get("model"), config.to_dict()["model"]
    if saved != current:
        diff = sorted(
            f"{section}.{key}: {saved[section][key]} vs {current[section][key]}"
            for section in current for key in current[section]
            if saved.get(section, {}).get(key) != current[section][key]
        )
        raise ValueError(f"--resume {path}: the checkpoint's model configuration differs ({'; '.join(diff)})")


def run(config: RunConfig, *, resume: str | None = None, export_path: str | Path | None = None,
        progress: bool = True) -> TrainResult:
    """Train one stage as ``config`` says; returns the trained model (on its device).

    resume: a checkpoint path, or "auto" for the newest under OUT/checkpoints (fresh start if none).
    export_path: where the final weights go (default train.export, else OUT/model.safetensors).
    """
    owns_group = not (dist.is_available() and dist.is_initialized())
    ctx = distributed.setup(config.train.device)
    try:
        return _run(config, ctx, resume, export_path, progress)
    finally:
        if owns_group:
            distributed.cleanup()


def _run(config: RunConfig, ctx: distributed.DistContext, resume: str | None, export_path: str | Path | None,
         progress: bool) -> TrainResult:
    tcfg, dcfg = config.train, config.data
    device = ctx.device
    out_dir = Path(tcfg.out_dir)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = tcfg.cudnn_benchmark
        torch.set_float32_matmul_precision("high")
    autocast = autocast_factory(tcfg.precision, device)

    # 1. model, starting weights, objective, optimizer, schedule
    seed_everything(tcfg.seed)
    model = HIDiff(config.model, with_stage1_encoder=True)
    resume_path = checkpointing.resolve_resume(resume, out_dir) if resume else None
    loaded = [] if resume_path else load_init_weights(model, tcfg)
    if tcfg.zero_init_output and tcfg.stage == 1 and not resume_path and not loaded:
        torch.nn.init.zeros_(model.restormer.output.weight)
    objective = build_objective(model, tcfg.stage, tcfg.loss).to(device)
    layout = _layout(tcfg.channels_last, device)
    objective.to(memory_format=layout)  # type: ignore[call-overload]
    params = objective.trainable_parameters()
    optimizer = make_optimizer(params, tcfg.optimizer, fused=device.type == "cuda")
    scheduler = CosineAnnealingRestartCyclicLR(optimizer, tcfg.scheduler)
    iteration, samples_consumed, elapsed_before = 0, 0, 0.0

    # 2. resume: weights, optimizer, schedule, position in the data, random generators
    state: dict[str, Any] | None = None
    if resume_path is not None:
        state = checkpointing.load_checkpoint(resume_path)
        _check_resume(state, config, resume_path)
        load_strict(model, state["model"], str(resume_path))
        optimizer.load_state_dict(state["optimizer"])
        _match_parameter_layouts(optimizer)
        scheduler.load_state_dict(state["scheduler"])
        iteration = int(state["iteration"])
        elapsed_before = float(state["elapsed_s"])
        data_state = state["data"]
        if int(data_state["seed"]) == tcfg.seed:
            # Another world size splits the stream differently: keep the global sample count.
            samples_consumed = int(data_state["samples_consumed"]) * int(data_state["world_size"]) // ctx.world_size
    step_module: torch.nn.Module = objective
    if ctx.distributed:
        distributed.ignore_spurious_stride_warnings()
        step_module = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    step_module = _compiled(step_module, tcfg.compile, device)

    # 3. data
    dataset = build_train_dataset(dcfg, tcfg.seed)
    stream = BatchStream(dataset, seed=tcfg.seed, rank=ctx.rank, world_size=ctx.world_size,
                         num_workers=default_workers(dcfg.num_workers, device), pin_memory=device.type == "cuda",
                         samples_consumed=samples_consumed)
    # Listed on every rank so that a missing folder fails everywhere, not only on rank 0.
    val_pairs = validation_pairs(dcfg.val.input, dcfg.val.target, dcfg.val_max_images) if dcfg.val else []

    # 4. outputs (rank 0 only)
    log = JsonlLog(out_dir / LOG_NAME, enabled=ctx.is_main)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        log.write("start", iteration, stage=tcfg.stage, world_size=ctx.world_size, device=str(device),
                  resumed_from=str(resume_path) if resume_path else None, init=loaded,
                  parameters=sum(p.numel() for p in params))
    if state is not None:
        # Last, so nothing above (model construction, loaders) shifts the restored generators.
        checkpointing.restore_rng(state["rng"], device)

    def save(at: int) -> Path | None:
        path = None
        if ctx.is_main:
            path = checkpointing.save_checkpoint(
                out_dir, stage=tcfg.stage, iteration=at, elapsed_s=elapsed_before + time.perf_counter() - start,
                config=config.to_dict(), model=model, optimizer=optimizer, scheduler=scheduler, data=stream.state(),
                device=device, keep=tcfg.keep_checkpoints)
            log.write("checkpoint", at, path=str(path))
        distributed.barrier(ctx)
        return path

    def run_validation(at: int) -> dict[str, float] | None:
        result = None
        if ctx.is_main and val_pairs:
            result = validate(model, tcfg.stage, val_pairs, device, autocast, dcfg.val_ssim)
            log.write("val", at, **result)
            objective.train()
        distributed.barrier(ctx)
        return result

    # 5. the loop
    objective.train()
    start = time.perf_counter()
    budget_s = tcfg.max_minutes * 60 if tcfg.max_minutes is not None else None
    loss_names: list[str] = []
    loss_sums: torch.Tensor | None = None
    interval_steps, interval_start = 0, time.perf_counter()
    last_checkpoint: Path | None = None
    last_val: dict[str, float] | None = None
    validated_at = -1
    stopped_early = False
    bar = tqdm(total=tcfg.total_iter, initial=iteration, desc=f"stage {tcfg.stage}", unit="it", dynamic_ncols=True,
               mininterval=1.0, disable=not (progress and ctx.is_main))
    try:
        while iteration < tcfg.total_iter:
            i = iteration + 1
            patch, batch = tcfg.progressive.stage_at(i)
            blur, sharp = stream.next_batch(patch, batch)
            blur = blur.to(device, non_blocking=True).contiguous(memory_format=layout)
            sharp = sharp.to(device, non_blocking=True).contiguous(memory_format=layout)
            noise = _stage_noise(model, blur.shape[0], tcfg.seed, i, ctx.rank, device) if tcfg.stage == 2 else None
            lr = optimizer.param_groups[0]["lr"]
            losses = _train_step(step_module, optimizer, params, tcfg.optimizer.grad_clip, autocast, blur, sharp, noise)
            scheduler.step()
            iteration = i
            bar.update(1)

            # Accumulate on the device; synchronise only when logging.
            if not loss_names:
                loss_names = list(losses)
            values = torch.stack([losses[name].detach().float() for name in loss_names])
            loss_sums = values if loss_sums is None else loss_sums + values
            interval_steps += 1
            if i % tcfg.log_every == 0 or i == tcfg.total_iter:
                means = distributed.mean_over_ranks(loss_sums / interval_steps, ctx).tolist()  # type: ignore[operator]
                if not all(np.isfinite(means)):
                    raise RuntimeError(
                        f"the loss is not finite ({dict(zip(loss_names, means))}) by iteration {i}; lower "
                        f"train.optimizer.lr (now {tcfg.optimizer.lr}) or resume from an earlier checkpoint"
                    )
                now = time.perf_counter()
                record = {("loss" if n == "total" else n): round(v, 6) for n, v in zip(loss_names, means)}
                rate = interval_steps / max(now - interval_start, 1e-9)
                log.write("train", i, **record, lr=lr, it_per_s=round(rate, 3), patch=patch, batch=batch,
                          elapsed_s=round(now - start, 2))
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
                loss_sums, interval_steps, interval_start = None, 0, now

            out_of_time = budget_s is not None and time.perf_counter() - start >= budget_s
            if budget_s is not None and ctx.distributed:
                # The ranks agree through a collective that waits for the GPU: only every
                # BUDGET_CHECK_EVERY iterations, so the host keeps queueing work ahead of the device.
                agree = i % BUDGET_CHECK_EVERY == 0 or i == tcfg.total_iter
                out_of_time = agree and distributed.any_rank(out_of_time, ctx)
            if i % tcfg.val_every == 0:
                last_val, validated_at = run_validation(i), i
            if i % tcfg.checkpoint_every == 0 or i == tcfg.total_iter or out_of_time:
                last_checkpoint = save(i)
            if out_of_time:
                stopped_early = True
                log.write("budget", i, max_minutes=tcfg.max_minutes)
                break
    finally:
        bar.close()
        stream.close()

    # 6. last validation and export
    if validated_at != iteration:
        last_val = run_validation(iteration)
    exported = None
    if ctx.is_main:
        target = Path(export_path or tcfg.export or out_dir / "model.safetensors")
        include_le = tcfg.stage == 1 or tcfg.export_stage1_encoder
        exported = export_weights(model, target, fp16=tcfg.export_fp16, include_stage1_encoder=include_le,
                                  training={"stage": tcfg.stage, "iteration": iteration})
        log.write("end", iteration, stopped_early=stopped_early, export=str(exported),
                  elapsed_s=round(time.perf_counter() - start, 2))
    distributed.barrier(ctx)
    return TrainResult(model, iteration, stopped_early, exported, last_checkpoint, last_val)


# --------------------------------------------------------------------------------------------
# Throughput benchmark
# --------------------------------------------------------------------------------------------


def benchmark(model_config: HIDiffConfig, *, iterations: int = 20, warmup: int = 5, patch: int = 256, batch: int = 8,
              device: str = "auto", precision: str = "auto", stage: int = 2, cudnn_benchmark: bool = True,
              channels_last: bool = False, compile: bool = False) -> dict[str, Any]:
    """Training iterations per second of ``stage`` (default 2) on random data, no data loading:
    the objective, backward, gradient clipping and the AdamW step, exactly as the loop runs them
    (cudnn_benchmark, channels_last and compile as the train options of the same names)."""
    dev = distributed.pick_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.set_float32_matmul_precision("high")
    autocast = autocast_factory(precision, dev)
    torch.manual_seed(0)
    model = HIDiff(model_config, with_stage1_encoder=True)
    layout = _layout(channels_last, dev)
    objective = build_objective(model, stage, LossConfig()).to(dev).train()
    objective.to(memory_format=layout)  # type: ignore[call-overload]
    step_module = _compiled(objective, compile, dev)
    params = objective.trainable_parameters()
    optimizer = make_optimizer(params, OptimizerConfig(), fused=dev.type == "cuda")
    blur = torch.rand(batch, 3, patch, patch, device=dev).contiguous(memory_format=layout)
    sharp = torch.rand(batch, 3, patch, patch, device=dev).contiguous(memory_format=layout)
    noise = torch.randn(batch, *model.prior_shape, device=dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    warm_start = time.perf_counter()
    for _ in range(warmup):
        _train_step(step_module, optimizer, params, 0.01, autocast, blur, sharp, noise)
    sync()
    warmup_s = time.perf_counter() - warm_start
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in tqdm(range(iterations), desc="benchmark", unit="it", mininterval=1.0):
        _train_step(step_module, optimizer, params, 0.01, autocast, blur, sharp, noise)
    sync()
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {
        "benchmark": f"stage{stage}_train_step",
        "iterations_per_s": round(iterations / seconds, 3),
        "images_per_s": round(iterations * batch / seconds, 2),
        "patch": patch,
        "batch": batch,
        "iterations": iterations,
        "precision": "bf16-autocast" if autocast is not contextlib.nullcontext else "fp32",
        "cudnn_benchmark": cudnn_benchmark and dev.type == "cuda",
        "channels_last": layout == torch.channels_last,
        "compiled": step_module is not objective,
        "warmup_s": round(warmup_s, 2),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "parameters": sum(p.numel() for p in params),
        "torch": torch.__version__,
    }
    if dev.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    return result


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hidiff.train",
        description="Train one HI-Diff stage (our YAML or an official option file); key.path=value overrides.",
    )
    parser.add_argument("config", nargs="?", type=Path, help="training YAML (ours or official options/train/*.yml)")
    parser.add_argument("overrides", nargs="*", help="overrides such as train.total_iter=1000 model.network_g.dim=16")
    parser.add_argument("--resume", metavar="PATH|auto", help="continue from a checkpoint ('auto': the newest in OUT/checkpoints)")
    parser.add_argument("--export-weights", metavar="PATH", type=Path, help="where to write the final weights (safetensors)")
    parser.add_argument("--export-fp16", action="store_true", help="export the weights in float16")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--benchmark", action="store_true",
                       help="print stage-2 training iterations/s (GoPro preset unless CONFIG) and exit")
    bench.add_argument("--benchmark-iters", type=int, default=20)
    bench.add_argument("--patch", type=int, default=256)
    bench.add_argument("--batch", type=int, default=8)
    bench.add_argument("--device", default="auto", help="benchmark device: auto, cpu, cuda, cuda:N")
    bench.add_argument("--benchmark-stage", type=int, choices=(1, 2), default=2)
    bench.add_argument("--no-cudnn-benchmark", action="store_true", help="cuDNN's default algorithms, no autotuning")
    bench.add_argument("--channels-last", action="store_true", help="channels-last layout (CUDA)")
    bench.add_argument("--compile", action="store_true", help="torch.compile the training step (CUDA)")
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        if args.benchmark:
            model_config = load_run_config(args.config, args.overrides).model if args.config else preset("gopro")
            speed = benchmark(model_config, iterations=args.benchmark_iters, patch=args.patch, batch=args.batch,
                              device=args.device, stage=args.benchmark_stage, cudnn_benchmark=not args.no_cudnn_benchmark,
                              channels_last=args.channels_last, compile=args.compile)
            options = [name for name in ("cudnn_benchmark", "channels_last", "compiled") if speed[name]]
            print(f"stage-{args.benchmark_stage} training: {speed['iterations_per_s']:.2f} it/s ({speed['images_per_s']:.1f} images/s), "
                  f"batch {args.batch}, patch {args.patch}, {speed['precision']}, {', '.join(options) or 'eager'}, "
                  f"{speed['device']}")
            print(json.dumps(speed))
            return 0
        if args.config is None:
            print("error: a training configuration is required (or --benchmark)", file=sys.stderr)
            return 2
        config = load_run_config(args.config, args.overrides)
        if args.export_fp16:
            config = _with_train(config, export_fp16=True)
        result = run(config, resume=args.resume, export_path=args.export_weights, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.export_path is not None:
        state = "stopped at the time budget" if result.stopped_early else "finished"
        print(f"stage {config.train.stage} {state} at iteration {result.iteration}; weights: {result.export_path}")
    return 0


def _with_train(config: RunConfig, **changes: Any) -> RunConfig:
    import dataclasses

    return dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))


if __name__ == "__main__":
    sys.exit(main())
