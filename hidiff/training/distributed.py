"""torch.distributed helpers: one process per GPU under torchrun, or a single process.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (plus MASTER_ADDR/PORT); :func:`setup` reads them,
picks the device (cuda:LOCAL_RANK, or the CPU) and starts the process group (NCCL on GPU, gloo
on CPU). Without those variables everything here is a no-op for a world of one.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """"auto": cuda:LOCAL_RANK when CUDA is available, else the CPU; "cpu"; "cuda" / "cuda:N"."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cpu":
        return torch.device("cpu")
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {preference!r} requested but CUDA is not available; use train.device=cpu")
        return torch.device(preference if ":" in preference else f"cuda:{local_rank}")
    raise ValueError(f"device {preference!r}: expected auto, cpu, cuda or cuda:N")


def setup(device_preference: str = "auto") -> DistContext:
    """Read the torchrun environment and start the process group when WORLD_SIZE > 1."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                device_id=device if device.type == "cuda" else None)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def mean_over_ranks(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise mean of ``values`` over all processes (a copy; for logging)."""
    out = values.detach().clone()
    if ctx.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= ctx.world_size
    return out


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every process when ``flag`` is true on any (so all stop at the same iteration)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


# DDP compares a gradient's strides with its bucket's exactly, also along dimensions of size 1: a
# 1x1 convolution's weight gradient in channels-last, (C, 1, C, C), against the bucket's (C, 1, 1, 1),
# warns although both are one memory layout (pytorch/pytorch#157862, "spurious"). Only that case
# is silenced; any other stride mismatch still warns.
SPURIOUS_1X1_STRIDES = r"(?s)Grad strides do not match bucket view strides.*grad\.sizes\(\) = \[\d+, \d+, 1, 1\]"


def ignore_spurious_stride_warnings() -> None:
    """Silence DDP's stride warning for 1x1 kernels (see SPURIOUS_1X1_STRIDES), for this process."""
    warnings.filterwarnings("ignore", message=SPURIOUS_1X1_STRIDES, category=UserWarning)
