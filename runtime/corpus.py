"""A corpus job's plan: which inputs, which outputs, what is already finished, in what units of work.

Every input (an image or a video, by suffix: :data:`runtime.io.IMAGE_SUFFIXES`,
:data:`runtime.io.VIDEO_SUFFIXES`) is written to ``OUT/<its name relative to the input folder>``
with the same suffix. Outputs are written to a temporary name and renamed (:mod:`runtime.io`),
so an output that exists is a finished one: :func:`plan_corpus` skips those, and removes the
temporary files a killed job left for the others.

Work is cut into units (:func:`work_units`): a video is one unit, read, deblurred and written
in order by one worker (so frame order and the z_T of the stream hold by construction, and the
output appears whole or not at all); images are grouped ``images_per_unit`` at a time, the
engine's batch. Nothing here imports Ray.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from runtime import io, sources

Kind = Literal["image", "video"]
MEDIA_SUFFIXES = io.IMAGE_SUFFIXES + io.VIDEO_SUFFIXES
REPORT_NAME = "_report.json"


@dataclass(frozen=True)
class WorkItem:
    """One input file and where its output goes."""

    name: str  # relative to the input folder; also the output's path relative to OUT
    source: str  # a local path or a URI
    kind: Kind
    output: str  # absolute local path


@dataclass(frozen=True)
class WorkUnit:
    """What one call of a worker does: one video, or a group of images deblurred together."""

    index: int
    items: tuple[WorkItem, ...]

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "items": [asdict(item) for item in self.items]})

    @classmethod
    def from_json(cls, text: str) -> "WorkUnit":
        data = json.loads(text)
        return cls(int(data["index"]), tuple(WorkItem(**item) for item in data["items"]))


@dataclass(frozen=True)
class Plan:
    """Items still to do, and those whose output already exists (skipped)."""

    pending: list[WorkItem]
    finished: list[WorkItem]


def kind_of(name: str) -> Kind | None:
    suffix = os.path.splitext(name)[1].lower()
    if suffix in io.IMAGE_SUFFIXES:
        return "image"
    if suffix in io.VIDEO_SUFFIXES:
        return "video"
    return None


def collect_sources(inputs: str | os.PathLike[str] | list[str | os.PathLike[str]]) -> tuple[list[str], str | None]:
    """(sources, root) from what the caller gave: a folder (local or URI: every image and video
    below it, root = the folder), a text file of paths or URIs (``.txt`` / ``.lst``), one media
    file, or a list of paths / URIs (root None: names are relative to the folder they share)."""
    if isinstance(inputs, (list, tuple)):
        return [str(s) for s in inputs], None
    text = str(inputs)
    if sources.is_uri(text):
        if kind_of(text) is not None:
            return [text], None
        return sources.list_files(text, MEDIA_SUFFIXES), text
    path = Path(text)
    if path.is_dir():
        return sources.list_files(path, MEDIA_SUFFIXES), str(path.resolve())
    if path.suffix.lower() in (".txt", ".lst"):
        return sources.read_list(path), None
    if kind_of(text) is not None:
        return [str(path.resolve())], None
    raise ValueError(f"input {inputs}: expected a folder, a list of paths (.txt), an image "
                     f"({', '.join(io.IMAGE_SUFFIXES)}) or a video ({', '.join(io.VIDEO_SUFFIXES)})")


def plan_corpus(inputs: str | os.PathLike[str] | list[str | os.PathLike[str]],
                output: str | os.PathLike[str]) -> Plan:
    """The plan for deblurring ``inputs`` into the folder ``output`` (see :func:`collect_sources`).

    ValueError for an input that is not media, an output folder inside the input folder (its
    outputs would be read as inputs on the next run), an output that would overwrite an input, or
    two inputs with the same relative name. Stale temporary files of pending outputs are removed.
    """
    found, root = collect_sources(inputs)
    out_dir = Path(output).resolve()
    if root is not None and not sources.is_uri(root):
        root_path = Path(root)
        if out_dir == root_path or root_path in out_dir.parents:
            raise ValueError(f"output {out_dir} is inside the input folder {root_path}: its outputs would be read "
                             "as inputs by the next run; pick a folder outside it")
    names = sources.relative_names(found, root)
    items = []
    for source, name in zip(found, names):
        kind = kind_of(name)
        if kind is None:
            raise ValueError(f"{source}: not an image ({', '.join(io.IMAGE_SUFFIXES)}) nor a video "
                             f"({', '.join(io.VIDEO_SUFFIXES)})")
        target = out_dir / name
        if not sources.is_uri(source) and Path(source).resolve() == target:
            raise ValueError(f"{source}: its output would overwrite it; pick another output folder")
        items.append(WorkItem(name, source, kind, str(target)))
    pending = [item for item in items if not os.path.exists(item.output)]
    finished = [item for item in items if os.path.exists(item.output)]
    for item in pending:
        for stale in io.temporaries_of(item.output):
            stale.unlink(missing_ok=True)
    return Plan(pending, finished)


def work_units(items: list[WorkItem], images_per_unit: int) -> list[WorkUnit]:
    """Videos first, one unit each, the largest local files first (they take longest, so they
    should not start last); then the images in name order, ``images_per_unit`` to a unit."""
    if images_per_unit < 1:
        raise ValueError(f"images_per_unit {images_per_unit}: expected >= 1")

    def size(item: WorkItem) -> int:
        try:
            return 0 if sources.is_uri(item.source) else os.path.getsize(item.source)
        except OSError:
            return 0

    videos = sorted((item for item in items if item.kind == "video"), key=lambda item: (-size(item), item.name))
    images = sorted((item for item in items if item.kind == "image"), key=lambda item: item.name)
    groups: list[tuple[WorkItem, ...]] = [(video,) for video in videos]
    groups += [tuple(images[i:i + images_per_unit]) for i in range(0, len(images), images_per_unit)]
    return [WorkUnit(index, group) for index, group in enumerate(groups)]
