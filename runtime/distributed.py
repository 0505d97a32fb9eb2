"""Deblur a corpus (folders of images and videos, or lists of paths and URIs) on many GPUs and
machines with Ray Data.

    from runtime.distributed import deblur_corpus
    report = deblur_corpus("frames/", "sharp/", engines="artifacts/")        # local Ray, every GPU
    report = deblur_corpus("s3://bucket/blurry/", "/mnt/shared/sharp", address="auto")  # a cluster
    print(report.summary())

The pipeline: :func:`runtime.corpus.plan_corpus` lists the inputs and skips those whose output
exists; :func:`runtime.corpus.work_units` cuts the rest into units (a video each, images by the
engine's batch); ``ray.data.from_items(units).map_batches(CorpusWorker, compute=ActorPoolStrategy(size=N),
num_gpus=1)`` runs one :class:`~runtime.corpus_worker.CorpusWorker` actor per GPU (its engines
loaded once), each writing its outputs atomically; the driver streams the results back for the
progress bar and the :class:`~runtime.corpus_report.CorpusReport`, written to ``OUT/_report.json``.

The same call runs on a laptop (a local Ray, CPU actors), on one multi-GPU machine (a local Ray,
one actor per GPU) and on a cluster (``address=``: every node must see the inputs, the engines
and ``OUT`` at the same paths, e.g. a shared file system, and have this project installed).

Ray is an optional dependency (``pip install -e ".[ray]"``), imported only inside the functions
here; nothing else in the project imports it.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from runtime.corpus import REPORT_NAME, WorkUnit, plan_corpus, work_units
from runtime.corpus_report import CorpusReport, UnitResult, build_report

log = logging.getLogger("runtime")

RAY_MISSING = ('the corpus pipeline needs Ray Data, which is not installed; install the extra: '
               'pip install -e ".[ray]"  (or: pip install "ray[data]>=2.40")')
DEVICES = ("auto", "cuda", "cpu")
MAX_BLOCKS = 1000  # Ray Data blocks the units are spread over (a unit per block up to this)


class PipelineError(RuntimeError):
    """The Ray pipeline stopped: its actors could not start (bad engines, weights or options) or
    Ray failed. The message ends with the cause as the actor raised it."""


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or ImportError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(RAY_MISSING) from exc
    return ray


@contextmanager
def ray_session(address: str | None = None, **init_kwargs: Any) -> Iterator[Any]:
    """Ray, initialised for the block: an existing session is used as it is; otherwise
    ``ray.init(address=...)`` (None starts a local Ray; "auto" or "HOST:PORT" joins a cluster)
    and ``ray.shutdown()`` at the end (a cluster keeps running)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is None:
        init_kwargs.setdefault("include_dashboard", False)
    ray.init(address=address, **init_kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class Placement:
    """How many actors, and what each one asks Ray for."""

    use_gpu: bool
    actors: int
    gpus_per_actor: float
    cpus_per_actor: float


def place_actors(resources: dict[str, float], device: str = "auto", actors: int | None = None,
                  gpus_per_actor: float = 1.0, cpus_per_actor: float = 1.0) -> Placement:
    """Actors for a cluster with ``resources`` (``ray.cluster_resources()``).

    ``device``: "auto" (GPUs when the cluster has any, else CPUs), "cuda" (GPUs, an error when
    there are none) or "cpu". ``actors``: None is one per GPU (GPUs / gpus_per_actor) or, on
    CPUs, CPUs / cpus_per_actor. A fractional ``gpus_per_actor`` (0.5) puts several actors on
    a GPU, so one's reading and writing overlaps another's compute.
    """
    if device not in DEVICES:
        raise ValueError(f"device {device!r}: expected one of {list(DEVICES)}")
    if not 0 < gpus_per_actor <= 1 and not (gpus_per_actor >= 1 and float(gpus_per_actor).is_integer()):
        raise ValueError(f"gpus_per_actor {gpus_per_actor}: expected a fraction of 1 or a whole number")
    if cpus_per_actor <= 0:
        raise ValueError(f"cpus_per_actor {cpus_per_actor}: expected > 0")
    if actors is not None and actors < 1:
        raise ValueError(f"actors {actors}: expected >= 1")
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    if device == "cuda" and gpus == 0:
        raise ValueError("device 'cuda', but the Ray cluster has no GPU; use device 'cpu' or 'auto'")
    use_gpu = device == "cuda" or (device == "auto" and gpus > 0)
    capacity = math.floor(gpus / gpus_per_actor + 1e-9) if use_gpu else math.floor(cpus / cpus_per_actor + 1e-9)
    if actors is None:
        actors = max(1, capacity)
    elif actors > capacity:
        # An autoscaling cluster adds nodes for them; a fixed one runs what fits and the rest wait.
        log.warning("runtime: %d actors asked for, the cluster has room for %d now (%s)", actors, capacity,
                    f"{gpus:g} GPUs" if use_gpu else f"{cpus:g} CPUs")
    return Placement(use_gpu, actors, gpus_per_actor if use_gpu else 0.0, cpus_per_actor)


def engine_batch(options: dict[str, Any]) -> int:
    """Images per unit: the engines' largest batch (the Restormer plan's profiles when there are
    TensorRT plans), capped by ``max_batch``; else ``max_batch`` or the runtime's default."""
    from runtime.deblurrer import DEFAULT_MAX_BATCH

    max_batch = options.get("max_batch", DEFAULT_MAX_BATCH)
    engines = options.get("engines")
    profile_batch = None
    if engines is not None:
        from engines.plan import PlanManifest, manifest_path, plan_path_for

        manifest = manifest_path(plan_path_for(engines, "restormer"))
        if os.path.exists(manifest):
            try:
                profile_batch = max(p.max[0] for p in PlanManifest.read(manifest).profiles)
            except (ValueError, OSError) as exc:
                log.warning("runtime: cannot read the engine profile from %s (%s); using batch %s", manifest, exc,
                            max_batch or DEFAULT_MAX_BATCH)
    sizes = [b for b in (max_batch, profile_batch) if b]
    return min(sizes) if sizes else DEFAULT_MAX_BATCH


def stream_results(ray: Any, units: list[WorkUnit], placement: Placement, options: dict[str, Any], retries: int,
                   video_fourcc: str | None, progress: bool) -> Iterator[UnitResult]:
    """Run the units on a pool of :class:`CorpusWorker` actors; yield each unit's result as it comes."""
    from ray.data import ActorPoolStrategy, DataContext

    from runtime.corpus_worker import CorpusWorker

    context = DataContext.get_current()
    saved = context.enable_progress_bars, context.max_errored_blocks
    context.enable_progress_bars = False  # ours counts items, not blocks
    context.max_errored_blocks = -1  # a unit whose actor keeps dying is reported; the others go on
    try:
        dataset = ray.data.from_items([{"unit": unit.to_json()} for unit in units],
                                      override_num_blocks=min(len(units), MAX_BLOCKS))
        constructor = {"options": options, "device": "cuda:0" if placement.use_gpu else "cpu", "retries": retries,
                       "threads": None if placement.use_gpu else max(1, int(placement.cpus_per_actor)),
                       "video_fourcc": video_fourcc}
        results = dataset.map_batches(CorpusWorker, batch_size=1, fn_constructor_kwargs=constructor,
                                      compute=ActorPoolStrategy(size=placement.actors),
                                      num_gpus=placement.gpus_per_actor, num_cpus=placement.cpus_per_actor)
        total = sum(len(unit.items) for unit in units)
        failed = 0
        with tqdm(total=total, desc="deblur", unit="item", disable=not progress) as bar:
            for row in results.iter_rows():
                result = UnitResult.from_json(str(row["result"]))
                failed += sum(item.status == "failed" for item in result.items)
                bar.update(len(result.items))
                bar.set_postfix(failed=failed, refresh=False)
                yield result
    except ray.exceptions.RayError as exc:
        # Ray's message holds the actor's whole traceback; its last line is the cause.
        cause = [line for line in str(exc).splitlines() if line.strip()][-1:] or [type(exc).__name__]
        raise PipelineError(f"the deblurring actors stopped ({type(exc).__name__}): {cause[0].strip()}") from exc
    finally:
        context.enable_progress_bars, context.max_errored_blocks = saved


def _describe(value: Any) -> Any:
    """An option as the report shows it: plain values as they are, a model object by its type."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value) if isinstance(value, os.PathLike) else f"<{type(value).__name__}>"


def deblur_corpus(inputs: str | os.PathLike[str] | list[str | os.PathLike[str]], output: str | os.PathLike[str], *,
                  address: str | None = None, actors: int | None = None, device: str = "auto",
                  gpus_per_actor: float = 1.0, cpus_per_actor: float = 1.0, images_per_unit: int | None = None,
                  retries: int = 2, video_fourcc: str | None = None, progress: bool = True,
                  ray_init: dict[str, Any] | None = None, **options: Any) -> CorpusReport:
    """Deblur every image and video of ``inputs`` into the folder ``output``, on Ray actors.

    ``inputs``: a folder (local or a URI such as ``s3://bucket/prefix``), a ``.txt`` list of paths
    or URIs, one file, or a Python list of paths / URIs. Outputs keep the inputs' names relative
    to the folder (or to the folder a list's entries share). Outputs that exist are skipped, so a
    rerun after a crash or a kill does only the rest.

    ``address``: None starts a local Ray (or uses the one already initialised), "auto" or
    "HOST:PORT" joins a cluster. ``device``, ``actors``, ``gpus_per_actor``, ``cpus_per_actor``:
    see :func:`place_actors`. ``images_per_unit``: images deblurred together (default
    :func:`engine_batch`). ``retries``: further attempts for a failed item before it is reported.
    ``video_fourcc``: codec of output videos ("FFV1" is lossless; default by suffix).
    ``ray_init``: more arguments of ``ray.init`` (``runtime_env``, ``num_cpus``...).
    ``options``: :class:`runtime.Deblurrer`'s arguments (``engines=``, ``model=``, ``backend=``,
    ``seed=``, ``tile=``...), the same on every actor.

    Returns the :class:`CorpusReport`, also written to ``output/_report.json``. A failed item
    never stops the job; an exception that does (Ctrl-C, the cluster lost) still writes the
    report of what finished, then propagates.
    """
    start = time.perf_counter()
    if retries < 0:
        raise ValueError(f"retries {retries}: expected >= 0")
    out_dir = Path(output).resolve()
    plan = plan_corpus(inputs, out_dir)
    if plan.pending:
        import_ray()  # a missing Ray is an ImportError that says what to install, before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    per_unit = images_per_unit or engine_batch(options)
    units = work_units(plan.pending, per_unit)
    settings: dict[str, Any] = {
        "inputs": str(inputs) if not isinstance(inputs, (list, tuple))
        else [str(i) for i in inputs] if len(inputs) <= 20 else f"{len(inputs)} paths and URIs",
        "address": address, "device": device, "images_per_unit": per_unit, "retries": retries,
        "video_fourcc": video_fourcc, "units": len(units),
        "options": {name: _describe(value) for name, value in options.items()}}
    results: list[UnitResult] = []
    error: str | None = None
    try:
        if units:
            with ray_session(address, **(ray_init or {})) as ray:
                placement = place_actors(ray.cluster_resources(), device, actors, gpus_per_actor, cpus_per_actor)
                settings["placement"] = asdict(placement)
                for result in stream_results(ray, units, placement, options, retries, video_fourcc, progress):
                    results.append(result)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        report = build_report(out_dir, units, results, len(plan.finished), time.perf_counter() - start,
                              settings, error)
        report.write(out_dir / REPORT_NAME)
    return report
