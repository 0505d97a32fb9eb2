"""What the Triton kernels share: the optional Triton import, when a kernel runs (and why it
cannot), which form of a kernel's op a trace takes, block sizes, the GPU's SM count, compute
capability and tensor memory accelerator, and the autotuners' common setup (the on-disk cache of
chosen tiles, pruning of tiles that do not fit a launch or the card)."""
from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch

try:  # Triton comes with PyTorch's CUDA wheels; the CPU wheels have none.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

try:  # Triton's host-side tensor descriptors (TMA), in Triton 3.4 and later
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - depends on the install
    TensorDescriptor = None

HALF_DTYPES = (torch.float16, torch.bfloat16)  # the dtypes the tensor-core kernels take

# Where this Triton's autotuner has ``cache_results``, the tile chosen for a shape is kept in
# Triton's cache folder (keyed by GPU, kernel source, shape and tiles), so that only a machine's
# first process pays the autotuning of each new shape.
DISK_CACHE = {"cache_results": True} if triton is not None and "cache_results" in inspect.signature(
    triton.autotune).parameters else {}

# Each kernel has two ops: ``hidiff::NAME``, a custom_op that torch.compile calls as one opaque
# operation, and ``hidiff::NAME_packaged``, a triton_op whose launch torch.export traces into the
# graph, so that an AOTInductor package compiles the kernel in and runs no Python for it.
PACKAGED_SUFFIX = "_packaged"
_forced_form: bool | None = None  # inside packaged_forms(): True packaged, False opaque
_any_device = False  # inside traced_on_any_device()

FALLBACK_SMS = 132  # an H100 SXM's, where no CUDA device is present (the interpreter, fake tensors on a CPU)
FALLBACK_CAPABILITY = 90  # an H100's compute capability (major * 10 + minor), where no CUDA device is present


def unavailable_reason(device: torch.device | str, dtype: torch.dtype, channels_last: bool) -> str | None:
    """Why the fused kernels cannot run a model on ``device`` in ``dtype`` with feature maps in
    channels-last memory (``channels_last``) or not: None when they can. They need a CUDA device,
    Triton (it comes with PyTorch's CUDA wheels), float16 or bfloat16, and channels-last maps."""
    device = torch.device(device)
    reasons = []
    if device.type != "cuda":
        reasons.append(f"device {device} is not a CUDA device")
    if triton is None:
        reasons.append("Triton is not installed")
    if dtype not in HALF_DTYPES:
        reasons.append(f"dtype {dtype} is not float16 or bfloat16")
    if not channels_last:
        reasons.append("the feature maps are not channels-last")
    return "; ".join(reasons) or None


def kernel_runs(*tensors: torch.Tensor, any_dtype: bool = False) -> bool:
    """Whether a kernel runs on ``tensors`` (else its PyTorch reference does): Triton is installed
    and they are CUDA tensors (any device inside :func:`traced_on_any_device`), float16 or bfloat16
    unless ``any_dtype``."""
    return triton is not None and all((_any_device or t.device.type == "cuda") and (any_dtype or t.dtype in HALF_DTYPES)
                                      for t in tensors)


def kernel_op(name: str) -> Any:
    """``torch.ops.hidiff.NAME``, or its packaged form while torch.export traces in Python (strict=False,
    as export/aoti_package does; see PACKAGED_SUFFIX); inside :func:`packaged_forms` the form it names.
    Dynamo's traces keep the opaque op: some torch releases (2.11) fold ``is_exporting()`` to True
    inside every dynamo trace, torch.compile's too."""
    packaged = _forced_form if _forced_form is not None else (
        torch.compiler.is_exporting() and not torch.compiler.is_dynamo_compiling())
    return getattr(torch.ops.hidiff, name + PACKAGED_SUFFIX if packaged else name)


@contextlib.contextmanager
def packaged_forms(packaged: bool = True) -> Iterator[None]:
    """Inside this block every kernel call takes the packaged form (``packaged``) or the opaque op,
    in an export or not: to run the kernels a package compiles in eagerly (their GPU tests,
    bench/graph_agreement.py), or to export either form (bench/package_lowering.py)."""
    global _forced_form
    before, _forced_form = _forced_form, packaged
    try:
        yield
    finally:
        _forced_form = before


@contextlib.contextmanager
def traced_on_any_device() -> Iterator[None]:
    """Inside this block the kernels' ops are called for float16 tensors on any device, as on a
    CUDA one: to trace a model on a CPU as it is traced for a GPU (bench/package_lowering.py). The
    trace's graph is the one a GPU gives; running the ops on a CPU fails."""
    global _any_device
    before, _any_device = _any_device, True
    try:
        yield
    finally:
        _any_device = before


def empty_channels_last(like: torch.Tensor, channels: int | None = None) -> torch.Tensor:
    """An uninitialised tensor of ``like``'s batch, height, width, dtype and device with ``channels``
    channels (default ``like``'s), in channels-last memory, allocated with explicit strides: the
    kernels' outputs. Inductor's lowering of ``torch.empty(..., memory_format=torch.channels_last)``
    traced inside a package's ``triton_op`` makes a contiguous buffer, and the kernel's fixed
    strides then cost a copy of it into channels-last order before every launch."""
    b, c, h, w = like.shape
    c = c if channels is None else channels
    return torch.empty_strided((b, c, h, w), (c * h * w, 1, w * c, c), device=like.device, dtype=like.dtype)


def cdiv(a: int, b: int) -> int:
    """a / b rounded up."""
    return -(-a // b)


def power_of_2(n: int) -> int:
    """The smallest power of two >= n."""
    return 1 << max(0, (n - 1).bit_length())


def dot_block(n: int) -> int:
    """The block that holds n elements along one side of a ``tl.dot``: a power of two, at least 16
    (tl.dot's smallest side)."""
    return max(16, power_of_2(n))


@functools.lru_cache(maxsize=None)
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """The streaming multiprocessors of ``device``; :data:`FALLBACK_SMS` where it is no CUDA device."""
    if device.type == "cuda" and torch.cuda.is_available():
        return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())
    return FALLBACK_SMS


@functools.lru_cache(maxsize=None)
def _cuda_capability(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return major * 10 + minor


def launch_capability(arguments: Mapping[str, Any]) -> int:
    """The compute capability (major * 10 + minor: 90 H100, 80 A100, 87 Jetson Orin) of the GPU a
    launch's tensors are on (the current GPU where its arguments hold no tensor, as in a compiler's
    trace), for the autotuners' rules of what fits a card; :data:`FALLBACK_CAPABILITY` off a GPU."""
    tensor = next((value for value in arguments.values() if isinstance(value, torch.Tensor)), None)
    if not torch.cuda.is_available() or (tensor is not None and tensor.device.type != "cuda"):
        return FALLBACK_CAPABILITY
    index = tensor.device.index if tensor is not None else None
    return _cuda_capability(index if index is not None else torch.cuda.current_device())


def tma_available(device: torch.device) -> bool:
    """Whether kernels on ``device`` can move tiles with the tensor memory accelerator: a Hopper
    (sm_90) or later GPU, and a Triton with host-side tensor descriptors."""
    return (TensorDescriptor is not None and device.type == "cuda"
            and torch.cuda.get_device_capability(device)[0] >= 9)


def tile_configs(names: Sequence[str], tiles: Iterable[Sequence[int]], **options: Any) -> list:
    """One ``triton.Config`` per tile, the tile's values named by ``names``: ``num_warps`` and
    ``num_stages`` are the launch's, the others the kernel's meta-parameters. ``options`` (e.g. a
    ``pre_hook``) go to every config."""
    configs = []
    for tile in tiles:
        meta = dict(zip(names, tile, strict=True))
        launch = {name: meta.pop(name) for name in ("num_warps", "num_stages") if name in meta}
        configs.append(triton.Config(meta, **launch, **options))
    return configs


def autotune(configs: list, key: list[str], fits: Callable[[Any, dict[str, Any]], bool] | None = None,
             disk_cache: bool = True) -> Any:
    """``triton.autotune`` over ``configs``, keyed by the launch arguments named in ``key``, with
    the tiles kept on disk (:data:`DISK_CACHE`; ``disk_cache=False`` for configs with hooks, which
    Triton's disk cache refuses). ``fits(config, arguments)``, where given, leaves out at each
    launch the configs that do not fit its arguments (e.g. that would spill registers)."""
    options: dict[str, Any] = dict(DISK_CACHE) if disk_cache else {}
    if fits is not None:
        def early_config_prune(configs: list, named_args: dict, **kwargs: Any) -> list:
            arguments = {**named_args, **kwargs}  # positional launch arguments, then keyword ones
            return [config for config in configs if fits(config, arguments)]

        options["prune_configs_by"] = {"early_config_prune": early_config_prune}
    return triton.autotune(configs=configs, key=key, **options)
