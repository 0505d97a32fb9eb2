"""One declarative contract per graph: names, dtypes, dynamic axes and TensorRT profiles.

Export, engine build, every backend, the runtime and the tests read these objects; nothing else
spells a tensor name or a profile. The contracts are pure data (no torch, no onnx) so that any
part of the project can import them.

Symbolic dimensions: ``batch``, ``height``, ``width`` (multiples of 8). The prior's token count
N = group**2 and channel count C' = 4 * embed_dim depend on the model, so contracts are built for
a model's prior shape with :func:`graph_contracts`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

IMAGE_MULTIPLE = 8  # three 2x PixelUnshuffle levels in the Restormer (and PixelUnshuffle(4) in LE_DM)


class Precision(str, enum.Enum):
    """Numeric precision of a graph's own tensors (its I/O are float32 unless said otherwise)."""

    FP32 = "fp32"
    FP16 = "fp16"

    @property
    def dtype_name(self) -> str:
        return "float32" if self is Precision.FP32 else "float16"

    @classmethod
    def parse(cls, value: str | "Precision") -> "Precision":
        if isinstance(value, Precision):
            return value
        try:
            return cls(str(value).lower())
        except ValueError as exc:
            raise ValueError(f"unknown precision {value!r}; expected one of {[p.value for p in cls]}") from exc


Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    """One named graph input or output. ``shape`` holds ints and symbolic names."""

    name: str
    dtype: str  # numpy dtype name: "float32", "float16", "int64"
    shape: tuple[Dim, ...]

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def concrete(self, dims: dict[str, int]) -> tuple[int, ...]:
        """The shape with every symbolic dimension replaced from ``dims``."""
        try:
            return tuple(d if isinstance(d, int) else int(dims[d]) for d in self.shape)
        except KeyError as exc:
            raise KeyError(f"tensor {self.name!r} needs dimension {exc.args[0]!r}; got {sorted(dims)}") from exc


@dataclass(frozen=True)
class ShapeProfile:
    """A TensorRT optimization profile for the image graphs: (batch, height, width) each."""

    min: tuple[int, int, int] = (1, 256, 256)
    opt: tuple[int, int, int] = (1, 720, 1280)
    max: tuple[int, int, int] = (4, 1080, 1920)

    def __post_init__(self) -> None:
        for label, (b, h, w) in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            if b < 1 or h < IMAGE_MULTIPLE or w < IMAGE_MULTIPLE:
                raise ValueError(f"profile {label} {(b, h, w)}: batch >= 1 and sides >= {IMAGE_MULTIPLE} required")
        for i, axis in enumerate(("batch", "height", "width")):
            if not self.min[i] <= self.opt[i] <= self.max[i]:
                raise ValueError(
                    f"profile {axis}: need min <= opt <= max, got {self.min[i]}, {self.opt[i]}, {self.max[i]}"
                )

    def padded(self) -> "ShapeProfile":
        """The profile with heights and widths rounded up to the image multiple (what engines receive)."""

        def up(s: tuple[int, int, int]) -> tuple[int, int, int]:
            return (s[0], pad_to_multiple(s[1]), pad_to_multiple(s[2]))

        return ShapeProfile(up(self.min), up(self.opt), up(self.max))

    def dims(self, which: str) -> dict[str, int]:
        b, h, w = getattr(self, which)
        return {"batch": b, "height": h, "width": w}

    def covers(self, batch: int, height: int, width: int) -> bool:
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (batch, height, width), self.max))

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: dict) -> "ShapeProfile":
        return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))  # type: ignore[arg-type]


def pad_to_multiple(n: int, multiple: int = IMAGE_MULTIPLE) -> int:
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class GraphContract:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str = ""
    # Dimensions that do not depend on the image; engines are built with them fixed.
    fixed_dims: dict[str, int] = field(default_factory=dict)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def spec(self, name: str) -> TensorSpec:
        for t in self.inputs + self.outputs:
            if t.name == name:
                return t
        raise KeyError(f"graph {self.name!r} has no tensor {name!r}; it has {list(self.input_names + self.output_names)}")

    @property
    def is_image_graph(self) -> bool:
        return any("height" in t.shape for t in self.inputs)

    def profile_shapes(self, profile: ShapeProfile) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """``{input: (min, opt, max)}`` for a TensorRT optimization profile."""
        out = {}
        for t in self.inputs:
            if not t.dynamic_axes:
                continue
            shapes = tuple(t.concrete({**profile.dims(which), **self.fixed_dims}) for which in ("min", "opt", "max"))
            out[t.name] = shapes  # type: ignore[assignment]
        return out  # type: ignore[return-value]

    def as_dict(self) -> dict:
        def spec(t: TensorSpec) -> dict:
            return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}

        return {
            "name": self.name,
            "inputs": [spec(t) for t in self.inputs],
            "outputs": [spec(t) for t in self.outputs],
            "fixed_dims": dict(self.fixed_dims),
        }


LE_DM = "le_dm"
DENOISE_STEP = "denoise_step"
RESTORMER = "restormer"
GRAPH_NAMES = (LE_DM, DENOISE_STEP, RESTORMER)


def graph_contracts(prior_tokens: int = 16, prior_channels: int = 256) -> dict[str, GraphContract]:
    """The three graphs of the HI-Diff pipeline for a model whose prior is ``[B, N, C']``.

    Image inputs and outputs are float32 in every precision: a fp16 graph casts at its edges, so
    callers never convert, and the first and last convolutions see full-precision pixels.
    """
    n, c = prior_tokens, prior_channels
    image = ("batch", 3, "height", "width")
    prior = ("batch", n, c)
    fixed = {"tokens": n, "channels": c}
    return {
        LE_DM: GraphContract(
            LE_DM,
            inputs=(TensorSpec("blur", "float32", image),),
            outputs=(TensorSpec("cond", "float32", prior),),
            description="latent encoder LE_DM: blurry image -> condition c",
            fixed_dims=fixed,
        ),
        DENOISE_STEP: GraphContract(
            DENOISE_STEP,
            inputs=(
                TensorSpec("z", "float32", prior),
                TensorSpec("cond", "float32", prior),
                TensorSpec("t", "int64", (1,)),
            ),
            outputs=(TensorSpec("z_prev", "float32", prior),),
            description="one reverse diffusion step z_t -> z_{t-1}, schedule tables baked in; t in [0, T)",
            fixed_dims=fixed,
        ),
        RESTORMER: GraphContract(
            RESTORMER,
            inputs=(TensorSpec("blur", "float32", image), TensorSpec("prior", "float32", prior)),
            outputs=(TensorSpec("sharp", "float32", image),),
            description="prior-guided Restormer with the multi-scale prior and HIM",
            fixed_dims=fixed,
        ),
    }

