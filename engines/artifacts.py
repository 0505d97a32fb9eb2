"""The files the export writes and the engines read: names, hashes, durable writes, manifests.

- :data:`MANIFEST_NAME`: the export's manifest, ``DIR/manifest.json`` beside the ONNX graphs
  (and read beside TensorRT plans when they sit in the same folder);
- :func:`sha256_file`: the hash every manifest records of the files it names;
- :func:`write_atomic` / :func:`atomic_path`: temporary name in the same folder, fsync, rename,
  fsync the folder (the one implementation lives in :mod:`hidiff.files`, which every package may
  import);
- :func:`resolve_inside`: a file a manifest names must stay inside the manifest's folder;
- :class:`ExportManifest`: ``manifest.json`` read and validated once, for the ONNX Runtime
  backend, the registry and the TensorRT build.

Pure Python: nothing here needs onnx, ONNX Runtime or TensorRT.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from engines.base import EngineError
from engines.contracts import GraphContract, Precision, TensorSpec
from hidiff.files import atomic_path, replace_durably, write_atomic

__all__ = ["MANIFEST_NAME", "ArtifactPathError", "ExportManifest", "GraphEntry", "atomic_path", "contract_from_dict",
           "replace_durably", "resolve_inside", "JsonManifest", "sha256_file", "write_atomic"]

MANIFEST_NAME = "manifest.json"


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class JsonManifest:
    """What a plan's and a package's manifest share: written atomically as JSON beside the file
    it describes, read back through the subclass's ``as_dict`` / ``from_dict``."""

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        raise NotImplementedError

    def write(self, path: str | Path) -> None:
        write_atomic(path, json.dumps(self.as_dict(), indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> Any:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


class ArtifactError(EngineError):
    """An artifact (plan, package) cannot be used; ``reason`` names why in a few words, ``path`` is the file."""

    def __init__(self, path: Path, reason: str, message: str):
        self.path, self.reason = path, reason
        super().__init__(message)


class ArtifactMismatch(ArtifactError):
    """The artifact is intact but was built for something else. ``reasons`` lists every mismatch
    (``reason`` is the first), ``details`` says what was found and what was expected for each."""

    def __init__(self, path: Path, mismatches: list[tuple[str, str]], what: str, rebuild: str):
        self.reasons = tuple(r for r, _ in mismatches)
        self.details = tuple(d for _, d in mismatches)
        listed = "; ".join(f"{r}: {d}" for r, d in mismatches)
        super().__init__(path, self.reasons[0], f"{what} {path} cannot be used here ({listed}). {rebuild}")


class ArtifactPathError(ValueError):
    """A manifest names a file outside its own folder; the folder is refused."""


def resolve_inside(folder: str | Path, name: Any, named_by: str) -> Path:
    """``folder / name``, refused unless it stays inside ``folder``: an absolute name, a ``..``
    that leaves the folder, or a symbolic link that points out of it raise
    :class:`ArtifactPathError`. Call it before anything is opened or hashed. ``named_by`` says
    who names the file, for the message (``"graph 'le_dm' in DIR/manifest.json"``)."""
    folder = Path(folder)
    if not isinstance(name, str) or not name.strip():
        raise ArtifactPathError(f"{named_by}: the file name {name!r} is not a name; expected a file inside "
                                f"{folder}, so the folder is refused: export it again")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        why = "is an absolute path"
    else:
        target = (folder / name).resolve()
        if target.is_relative_to(folder.resolve()):
            return folder / name
        why = f"resolves to {target}, outside the folder (through '..' or a symbolic link)"
    raise ArtifactPathError(f"{named_by}: {name!r} {why}. Every file of an artifacts folder must lie inside it, "
                            f"so {folder} is refused: export or build it again, and copy artifacts as files, "
                            "not links")


def contract_from_dict(d: Mapping[str, Any]) -> GraphContract:
    """The inverse of ``GraphContract.as_dict()`` (what ONNX and plan manifests store)."""
    def spec(t: Mapping[str, Any]) -> TensorSpec:
        return TensorSpec(str(t["name"]), str(t["dtype"]), tuple(t["shape"]))

    try:
        return GraphContract(
            name=str(d["name"]),
            inputs=tuple(spec(t) for t in d["inputs"]),
            outputs=tuple(spec(t) for t in d["outputs"]),
            description=str(d.get("description", "")),  # GraphContract.as_dict() leaves it out
            fixed_dims={str(k): int(v) for k, v in d.get("fixed_dims", {}).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"graph contract field missing or malformed: {exc!r}") from exc


@dataclass(frozen=True)
class GraphEntry:
    """One graph of an export: its file (inside the export folder), recorded sha256 and contract."""

    name: str
    path: Path
    sha256: str
    contract: GraphContract


@dataclass(frozen=True)
class ExportManifest:
    """``DIR/manifest.json`` as written by the export (layout in :mod:`export.manifest`), validated.

    ``ExportManifest.read(DIR)`` raises FileNotFoundError when there is none, ValueError when it
    is not a valid manifest, and :class:`ArtifactPathError` when a graph's file lies outside DIR.
    ``data`` is the whole document as read.
    """

    path: Path
    precision: Precision
    graphs: dict[str, GraphEntry]
    model: dict[str, Any]  # {"config": HIDiffConfig.to_dict(), "prior_tokens": N, "prior_channels": C', ...}
    data: dict[str, Any]

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def prior_shape(self) -> tuple[int, int]:
        """(N, C'): the prior's tokens and channels of the exported model."""
        return int(self.model["prior_tokens"]), int(self.model["prior_channels"])

    @property
    def num_timesteps(self) -> int | None:
        """T of the exported schedule, None when the manifest does not say."""
        schedule = (self.model.get("config") or {}).get("diffusion_schedule") or {}
        return int(schedule["timesteps"]) if "timesteps" in schedule else None

    @classmethod
    def read(cls, folder: str | Path) -> "ExportManifest":
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: export the ONNX graphs first (export/onnx_export.py), "
                                    "or point to the folder that holds the .onnx files and their manifest.json")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError(f"the document is a {type(data).__name__}, not an object")
            precision = Precision.parse(data["precision"])
            model = dict(data["model"])
            model["prior_tokens"], model["prior_channels"] = int(model["prior_tokens"]), int(model["prior_channels"])
            graphs: dict[str, GraphEntry] = {}
            for name, entry in dict(data["graphs"]).items():
                contract = contract_from_dict(entry["contract"])
                if contract.name != name:
                    raise ValueError(f"graph {name!r} carries the contract of {contract.name!r}")
                file = resolve_inside(path.parent, entry["file"], f"graph {name!r} in {path}")
                graphs[str(name)] = GraphEntry(str(name), file, str(entry["sha256"]), contract)
        except ArtifactPathError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"{path} is not a valid export manifest ({type(exc).__name__}: {exc}); "
                             "export the ONNX graphs again") from exc
        return cls(path, precision, graphs, model, data)

    def select(self, names: Sequence[str]) -> list[GraphEntry]:
        """The entries of ``names``, in that order; ValueError naming those the export lacks."""
        unknown = [n for n in names if n not in self.graphs]
        if unknown:
            raise ValueError(f"graphs {unknown} are not in the export at {self.folder}; it has {sorted(self.graphs)}")
        return [self.graphs[n] for n in names]

    def verified_file(self, name: str, contract: GraphContract | None = None) -> Path:
        """The graph's file, after its sha256 (and, when given, ``contract``) were checked against
        the manifest. FileNotFoundError or :class:`~engines.base.EngineError` say what differs and
        what to do."""
        if name not in self.graphs:
            raise EngineError(f"{self.path} lists graphs {sorted(self.graphs)}; {name!r} is missing: export again")
        entry = self.graphs[name]
        if not entry.path.is_file():
            raise FileNotFoundError(f"{entry.path} (graph {name!r}, listed in {self.path}) does not exist; export again")
        digest = sha256_file(entry.path)
        if digest != entry.sha256:
            raise EngineError(f"{entry.path} (graph {name!r}) has sha256 {digest}, but {self.path} records "
                             f"{entry.sha256}: the file changed after the export; export again")
        if contract is not None and entry.contract.as_dict() != contract.as_dict():
            raise EngineError(f"{self.path}: the contract recorded for graph {name!r} ({entry.contract.as_dict()}) "
                             f"differs from this code's ({contract.as_dict()}); export the graphs again with this "
                             "version")
        return entry.path
