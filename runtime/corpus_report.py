"""What a corpus job did: per-item results from the actors, and the final report built from them.

Actors return a :class:`UnitResult` per unit of work (as JSON, the one column that travels
through Ray Data). :func:`build_report` turns them into a :class:`CorpusReport`: items done,
skipped (finished by an earlier run), failed (with the error and the number of attempts, never
dropped: a unit whose result never came back is a failure too), frames, and throughput overall
and per actor (one actor = one GPU, or a share of one). The report is printed by
:meth:`CorpusReport.summary` and written as JSON beside the outputs (``OUT/_report.json``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from hidiff.files import write_atomic
from runtime.corpus import WorkUnit

Status = Literal["done", "failed"]


@dataclass(frozen=True)
class ItemResult:
    name: str
    source: str
    status: Status
    frames: int  # frames written (1 for an image)
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class UnitResult:
    """One unit's items, who did them and when (``time.time()`` of the actor's machine)."""

    index: int
    actor: str  # host, process and device of the actor
    backend: str
    start: float
    end: float
    items: tuple[ItemResult, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "UnitResult":
        data = json.loads(text)
        items = tuple(ItemResult(**item) for item in data.pop("items"))
        return cls(items=items, **data)


@dataclass(frozen=True)
class Failure:
    name: str
    source: str
    error: str
    attempts: int


@dataclass(frozen=True)
class ActorThroughput:
    """One actor's share: items and frames it finished, and the seconds it spent on its units."""

    actor: str
    backend: str
    items: int
    frames: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class CorpusReport:
    """The outcome of :func:`runtime.distributed.deblur_corpus`.

    ``seconds`` is the job's wall time with the actors' start (engines loading) included;
    ``processing_seconds`` runs from the first unit's start to the last unit's end, the figure
    to compare between actor counts. ``complete`` is False when the job stopped early (an
    exception, Ctrl-C): what finished is kept, and a rerun does the rest.
    """

    output: str
    done: int = 0
    skipped: int = 0
    failed: list[Failure] = field(default_factory=list)
    remaining: int = 0  # items not done when the job stopped early
    frames: int = 0
    seconds: float = 0.0
    processing_seconds: float = 0.0
    actors: list[ActorThroughput] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    complete: bool = True
    error: str | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def processing_frames_per_second(self) -> float:
        return self.frames / self.processing_seconds if self.processing_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["frames_per_second"] = self.frames_per_second
        data["processing_frames_per_second"] = self.processing_frames_per_second
        for actor, entry in zip(self.actors, data["actors"]):
            entry["frames_per_second"] = actor.frames_per_second
        return data

    def write(self, path: str | Path) -> Path:
        """Write :meth:`as_dict` as JSON, atomically."""
        return write_atomic(path, json.dumps(self.as_dict(), indent=2, default=str) + "\n")

    def summary(self) -> str:
        lines = [f"done: {self.done} ({self.frames} frames)", f"skipped: {self.skipped} (already finished)",
                 f"failed: {len(self.failed)}"]
        lines += [f"  {f.name}: {f.error} ({f.attempts} attempt{'s' if f.attempts != 1 else ''})" for f in self.failed]
        lines.append(f"actors: {len(self.actors)}")
        lines += [f"  {a.actor} ({a.backend}): {a.items} items, {a.frames} frames, {a.frames_per_second:.2f} frames/s"
                  for a in self.actors]
        lines.append(f"speed: {self.frames_per_second:.2f} frames/s overall in {self.seconds:.1f} s "
                     f"({self.processing_frames_per_second:.2f} frames/s from the first unit's start to the last's end)")
        if not self.complete:
            lines.append(f"stopped early ({self.remaining} items not done): {self.error}; "
                         "run the same command again to finish")
        return "\n".join(lines)


def build_report(output: str | Path, units: list[WorkUnit], results: list[UnitResult], skipped: int,
                 seconds: float, settings: dict[str, Any] | None = None, error: str | None = None) -> CorpusReport:
    """The report of a job that ran ``units`` and got ``results`` back.

    Items of units without a result are failures: when the job completed, their actor died on
    them every time Ray retried; when it stopped early (``error``), they were not done.
    """
    report = CorpusReport(str(output), skipped=skipped, seconds=seconds, settings=dict(settings or {}),
                          complete=error is None, error=error)
    returned = {result.index for result in results}
    for result in results:
        for item in result.items:
            if item.status == "done":
                report.done += 1
                report.frames += item.frames
            else:
                report.failed.append(Failure(item.name, item.source, item.error or "unknown error", item.attempts))
    why = "no result came back: its actor's process died on it every time Ray retried it"
    for unit in units:
        if unit.index in returned:
            continue
        if error is None:
            report.failed += [Failure(item.name, item.source, why, 0) for item in unit.items]
        else:
            report.remaining += len(unit.items)
    if results:
        report.processing_seconds = max(r.end for r in results) - min(r.start for r in results)
    by_actor: dict[str, list[UnitResult]] = {}
    for result in results:
        by_actor.setdefault(result.actor, []).append(result)
    for actor, done in sorted(by_actor.items()):
        items = [item for result in done for item in result.items if item.status == "done"]
        report.actors.append(ActorThroughput(actor, done[0].backend, len(items), sum(i.frames for i in items),
                                               sum(r.end - r.start for r in done)))
    return report
