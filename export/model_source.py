"""Where the exported model comes from: the official release files, our own weights file, or the
embedded default model. One frozen description, one ``load()``, errors a user can act on."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hidiff.model import HIDiff


class ModelSourceError(ValueError):
    """The model options are inconsistent, or the files cannot be loaded as asked."""


@dataclass(frozen=True)
class ModelSource:
    """``official``: ``net_g``/``net_le_dm``/``net_d`` (+ optional official ``options`` YAML);
    ``weights``: a file written by ``HIDiff.save``; ``default``: ``hidiff.default_model()``."""

    kind: str
    net_g: Path | None = None
    net_le_dm: Path | None = None
    net_d: Path | None = None
    options: Path | None = None
    weights: Path | None = None

    @classmethod
    def from_options(cls, net_g: str | Path | None = None, net_le_dm: str | Path | None = None,
                     net_d: str | Path | None = None, options: str | Path | None = None,
                     weights: str | Path | None = None) -> "ModelSource":
        """Validate a combination of command-line model options."""
        official = {"--net-g": net_g, "--net-le-dm": net_le_dm, "--net-d": net_d}
        given = [flag for flag, value in official.items() if value is not None]
        if weights is not None and (given or options is not None):
            raise ModelSourceError("--weights is our own single file; do not combine it with the official "
                                   f"{' '.join(given + (['--options'] if options is not None else []))}")
        if given and len(given) < 3:
            missing = [flag for flag in official if flag not in given]
            raise ModelSourceError(f"the official release needs --net-g, --net-le-dm and --net-d; missing {' '.join(missing)}")
        if options is not None and not given:
            raise ModelSourceError("--options describes the official files; pass --net-g, --net-le-dm and --net-d with it")
        if given:
            return cls("official", Path(net_g), Path(net_le_dm), Path(net_d),  # type: ignore[arg-type]
                       Path(options) if options is not None else None)
        if weights is not None:
            return cls("weights", weights=Path(weights))
        return cls("default")

    def files(self) -> dict[str, Path]:
        named = {"net_g": self.net_g, "net_le_dm": self.net_le_dm, "net_d": self.net_d, "options": self.options,
                 "weights": self.weights}
        return {role: path for role, path in named.items() if path is not None}

    def load(self) -> "HIDiff":
        """The model in float32 on the CPU, in eval mode. ModelSourceError says what is wrong."""
        from hidiff.checkpoint import CheckpointMismatch
        from hidiff.model import HIDiff

        for role, path in self.files().items():
            if not path.is_file():
                raise ModelSourceError(f"--{role.replace('_', '-')} {path}: no such file")
        try:
            if self.kind == "official":
                return HIDiff.from_official(self.net_g, self.net_le_dm, self.net_d, self.options)  # type: ignore[arg-type]
            if self.kind == "weights":
                return HIDiff.load(self.weights)  # type: ignore[arg-type]
            import hidiff

            return hidiff.default_model()
        except CheckpointMismatch as exc:
            raise ModelSourceError(str(exc)) from exc
        except FileNotFoundError as exc:
            raise ModelSourceError(str(exc)) from exc
        except (ValueError, TypeError) as exc:  # unreadable files, unknown option keys, bad configurations
            raise ModelSourceError(str(exc)) from exc

    def describe(self) -> dict[str, Any]:
        """What the manifest records: the kind and each file with its sha256."""
        from engines.artifacts import sha256_file

        files = {role: {"path": str(path), "sha256": sha256_file(path)} for role, path in self.files().items()}
        if self.kind == "default":
            from hidiff.weights import DEFAULT_WEIGHTS

            if DEFAULT_WEIGHTS.is_file():
                files["weights"] = {"path": str(DEFAULT_WEIGHTS), "sha256": sha256_file(DEFAULT_WEIGHTS)}
        return {"kind": self.kind, "files": files}
