"""The worker of a corpus job: one Deblurrer, loaded once, turning units of work into output files.

:class:`CorpusWorker` is the callable class that ``ray.data.Dataset.map_batches`` makes one actor
of per GPU (:mod:`runtime.distributed`); it knows nothing of Ray and runs as well in a plain loop.
A batch is a dict with a ``"unit"`` column of :class:`~runtime.corpus.WorkUnit` JSON; the answer
has a ``"result"`` column of :class:`~runtime.corpus_report.UnitResult` JSON.

- Images of a unit are read in parallel threads (OpenCV releases the GIL), deblurred in one
  :meth:`Deblurrer.deblur` call on the list (the engine's batches), and written in parallel.
- A video is read, deblurred and written in order (:func:`runtime.jobs.deblur_video_file`).
- Any item that fails (unreadable, corrupt, a deblurring error, a full disk) is tried again on
  its own, up to ``retries`` more times, then reported with its error; the others go on. The
  worker itself never stops on a bad item.
"""
from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from runtime import io, sources
from runtime.corpus import WorkItem, WorkUnit
from runtime.corpus_report import ItemResult, UnitResult
from runtime.jobs import deblur_video_file

IO_THREADS = 4  # image reads and writes in flight per worker


def read_source_image(source: str) -> io.Image:
    """An image from a local path or a URI."""
    if sources.is_uri(source):
        return io.decode_image(sources.read_bytes(source), source)
    return io.read_image(source)


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def actor_label(device: Any) -> str:
    """Host, process and device: who did a unit, in the report."""
    label = f"{socket.gethostname()} pid {os.getpid()} {device}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if getattr(device, "type", str(device)) == "cuda" and visible:
        label += f" (CUDA_VISIBLE_DEVICES={visible})"
    return label


class CorpusWorker:
    """``CorpusWorker(options, device="cpu", retries=2, threads=None, video_fourcc=None)``

    - ``options``: :class:`runtime.Deblurrer`'s keyword arguments (engines, model, backend, seed...).
    - ``device``: the Deblurrer's device; "cuda:0" in a Ray actor given one GPU (Ray sets
      CUDA_VISIBLE_DEVICES to it).
    - ``retries``: further attempts for an item that failed.
    - ``threads``: torch's intra-op threads (for CPU workers: the CPUs the actor was given).
    - ``video_fourcc``: the codec of output videos (None: by suffix, see :mod:`runtime.io`).
    """

    def __init__(self, options: dict[str, Any], device: str = "cpu", retries: int = 2, threads: int | None = None,
                 video_fourcc: str | None = None):
        import torch

        from runtime.deblurrer import Deblurrer

        if retries < 0:
            raise ValueError(f"retries {retries}: expected >= 0")
        if threads:
            torch.set_num_threads(threads)
        self.deblurrer = Deblurrer(device=device, **options)
        self.retries = retries
        self.video_fourcc = video_fourcc
        self.label = actor_label(self.deblurrer.device)
        self._pool = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="corpus-io")

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        results = [self.run(WorkUnit.from_json(str(text))).to_json() for text in batch["unit"]]
        return {"result": np.array(results, dtype=object)}

    def run(self, unit: WorkUnit) -> UnitResult:
        """Do one unit: its videos one by one, its images together."""
        start = time.time()
        results = {item.name: self._video(item) for item in unit.items if item.kind == "video"}
        images = [item for item in unit.items if item.kind == "image"]
        if images:
            results.update((result.name, result) for result in self._images(images))
        return UnitResult(unit.index, self.label, self.deblurrer.backend, start, time.time(),
                          tuple(results[item.name] for item in unit.items))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.deblurrer.close()

    # ------------------------------------------------------------------------------ items

    def _attempts(self, item: WorkItem, job: Callable[[], int], tried: int = 0,
                  error: BaseException | None = None) -> ItemResult:
        """Run ``job`` (returns the frames written) until it succeeds or 1 + retries attempts
        were made, ``tried`` of them already (which failed with ``error``)."""
        while tried < 1 + self.retries:
            tried += 1
            try:
                frames = job()
            except Exception as exc:  # any failure of one item is that item's, reported below
                error = exc
                continue
            return ItemResult(item.name, item.source, "done", frames, tried)
        return ItemResult(item.name, item.source, "failed", 0, tried,
                          describe_error(error) if error is not None else "unknown error")

    def _video(self, item: WorkItem) -> ItemResult:
        def job() -> int:
            with sources.local_file(item.source) as path:
                return deblur_video_file(self.deblurrer, path, item.output, self.video_fourcc).frames

        return self._attempts(item, job)

    def _one_image(self, item: WorkItem) -> int:
        image = read_source_image(item.source)
        io.write_image(item.output, self.deblurrer.deblur(image.frame), image.bits, image.icc)
        return 1

    def _images(self, items: list[WorkItem]) -> list[ItemResult]:
        """All together first (parallel reads, one deblur call, parallel writes); an item that
        failed on the way is then tried on its own."""
        errors: list[BaseException | None] = [None] * len(items)
        images: list[io.Image | None] = [None] * len(items)
        for i, outcome in enumerate(self._pool.map(_outcome(read_source_image), [item.source for item in items])):
            if isinstance(outcome, BaseException):
                errors[i] = outcome
            else:
                images[i] = outcome
        readable = [i for i, image in enumerate(images) if image is not None]
        if readable:
            try:
                sharp = self.deblurrer.deblur([images[i].frame for i in readable])  # type: ignore[union-attr]
            except Exception as exc:  # one bad frame fails the call: every frame is retried alone
                for i in readable:
                    errors[i] = exc
            else:
                writes = [(items[i].output, out, images[i].bits, images[i].icc)  # type: ignore[union-attr]
                          for i, out in zip(readable, sharp)]
                for i, outcome in zip(readable, self._pool.map(_outcome(_write), writes)):
                    if isinstance(outcome, BaseException):
                        errors[i] = outcome
        return [ItemResult(item.name, item.source, "done", 1, 1) if error is None
                else self._attempts(item, functools.partial(self._one_image, item), 1, error)
                for item, error in zip(items, errors)]


def _write(args: tuple[str, np.ndarray, int, bytes | None]) -> None:
    io.write_image(*args)


def _outcome(function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``function`` returning its exception instead of raising it (for executor maps)."""

    def call(argument: Any) -> Any:
        try:
            return function(argument)
        except Exception as exc:
            return exc

    return call
