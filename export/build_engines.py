"""Export HI-Diff to three ONNX graphs, check them, and build TensorRT engines from them.

    python export/build_engines.py [model options] --precision fp32|fp16 [--no-engines] [--no-aoti] --out DIR

Model options (one of):
    --net-g F --net-le-dm F --net-d F [--options YML]   the official release files
    --weights F                                          a file written by HIDiff.save
    (none)                                               the embedded default model

Steps:
    1. load the model
    2. export le_dm, denoise_step, restormer to DIR, checked and compared with PyTorch in
       ONNX Runtime (export.pipeline: all files appear together, or none)
    3. print the node report; unless --no-aoti, write AOTInductor packages (export.aoti_package)
    4. unless --no-engines: build TensorRT engines (export.trt_build); where TensorRT or a GPU
       is missing, say which engines were not built and why, and print the trtexec lines

Exit status: 0 done (also when engines could not be built for lack of TensorRT/GPU),
1 a graph failed its checks or drifted from PyTorch, or an engine build failed,
2 bad input (missing file, checkpoint/options mismatch, unusable output folder, bad flags).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):
    # Run as a file (python export/build_engines.py): make the repository's packages importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.contracts import Precision  # noqa: E402

if TYPE_CHECKING:
    from hidiff.model import HIDiff

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2
FLAVOURS = ("auto", "tensorrt", "tensorrt_rtx")


class BadInput(ValueError):
    """A command-line problem the user fixes; printed as one line, exit status 2."""


@dataclass(frozen=True)
class EngineOptions:
    profiles: tuple[str, ...]  # "MIN:OPT:MAX" strings, parsed by export.trt_build.parse_profile
    opt_level: int
    flavour: str
    force: bool


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="build_engines.py",
        description="Export HI-Diff to ONNX (le_dm, denoise_step, restormer), verify it, build TensorRT engines.",
    )
    model = parser.add_argument_group("model (default: the embedded model)")
    model.add_argument("--net-g", type=Path, help="official net_g .pth (the prior-guided Restormer)")
    model.add_argument("--net-le-dm", type=Path, help="official net_le_dm .pth (the latent encoder)")
    model.add_argument("--net-d", type=Path, help="official net_d .pth (the denoiser)")
    model.add_argument("--options", type=Path, help="official option file (YAML) the .pth files were trained with")
    model.add_argument("--weights", type=Path, help="a .safetensors file written by HIDiff.save")
    parser.add_argument("--precision", choices=[p.value for p in Precision], default=Precision.FP16.value,
                        help="graph precision; fp16 graphs keep float32 statistics (default fp16)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--force", action="store_true", help="replace an export already in --out and rebuild engines")
    engines = parser.add_argument_group("TensorRT engines")
    engines.add_argument("--no-engines", action="store_true", help="only export and check the ONNX graphs")
    engines.add_argument("--profile", action="append", default=[], metavar="MIN:OPT:MAX",
                         help="BxHxW:BxHxW:BxHxW, repeatable (default 1x256x256:1x720x1280:4x1080x1920)")
    engines.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="N",
                         help="TensorRT builder optimization level 0..5 (default 3)")
    engines.add_argument("--trt-flavour", choices=FLAVOURS, default="auto", help="TensorRT or TensorRT-RTX (default auto)")
    parser.add_argument("--aoti", action=argparse.BooleanOptionalAction, default=True,
                        help="also write AOTInductor packages (.pt2): CPU FP32, and CUDA in --precision where a GPU "
                             "is (default on; minutes of C++ compilation on a small CPU)")
    return parser.parse_args(argv)


def load_model(args: argparse.Namespace) -> tuple["HIDiff", dict[str, Any]]:
    """The model the options name, and its description for the manifest; BadInput if unusable."""
    from export.model_source import ModelSource, ModelSourceError

    try:
        source = ModelSource.from_options(args.net_g, args.net_le_dm, args.net_d, args.options, args.weights)
        return source.load(), source.describe()
    except ModelSourceError as exc:
        raise BadInput(str(exc)) from exc


def check_profiles(texts: Sequence[str]) -> None:
    """Reject malformed --profile values before the export runs (when export.trt_build is there)."""
    try:
        from export.trt_build import parse_profile
    except ImportError:
        return
    for text in texts:
        try:
            parse_profile(text)
        except ValueError as exc:
            raise BadInput(f"--profile {text}: {exc}") from exc


def build_trt_engines(out_dir: Path, options: EngineOptions) -> int:
    """Build the plans beside the ONNX graphs; return the exit status (1 only if a build failed)."""
    try:
        from export import trt_build
    except ImportError as exc:  # the engine builder is optional for an ONNX-only machine
        print(f"engines: not built: export.trt_build cannot be imported ({exc})")
        return EXIT_OK
    profiles = [trt_build.parse_profile(p) for p in options.profiles] or [trt_build.DEFAULT_PROFILE]
    print("engines:")
    report = trt_build.build_engines(out_dir, out_dir, profiles, opt_level=options.opt_level,
                                     timing_cache=out_dir / trt_build.TIMING_CACHE_NAME, flavour=options.flavour,
                                     force=options.force, log=lambda message: print(f"  {message}"))
    print("engine summary:")
    for line in report.lines():
        print(f"  {line}")
    missing = [r.graph for r in report.results if r.status == "not built"]
    if missing:
        print(f"engines not built here: {', '.join(missing)}. On a machine with TensorRT, run:")
        for line in trt_build.trtexec_commands(out_dir, out_dir, profiles, graphs=missing,
                                               opt_level=options.opt_level):
            print(f"  {line}")
    return EXIT_CHECK_FAILED if any(r.status == "failed" for r in report.results) else EXIT_OK


def run(args: argparse.Namespace) -> int:
    from export.graph_check import format_table
    from export.onnx_export import check_exporter_versions
    from export.pipeline import check_output_dir, export_onnx_dir

    precision = Precision.parse(args.precision)
    engine_options = EngineOptions(tuple(args.profile), args.opt_level, args.trt_flavour, args.force)
    # 1. everything a user can get wrong, cheapest first: flags, output folder, model, libraries
    if not args.no_engines:
        check_profiles(engine_options.profiles)
    check_output_dir(args.out, args.force)
    model, source = load_model(args)
    try:
        check_exporter_versions()
    except RuntimeError as exc:
        raise BadInput(str(exc)) from exc
    print(f"model: {source['kind']}, {model.num_parameters():,} parameters, prior {model.prior_shape}")
    # 2. export, check, compare, write
    result = export_onnx_dir(model, args.out, precision, force=args.force, source=source)
    # 3. the report
    print(format_table(list(result.reports.values())))
    print(f"wrote {', '.join(p.name for p in result.files.values())}, manifest.json, export_report.json to {result.out_dir}")
    status = build_aoti(model, result.out_dir, precision, args.force) if args.aoti else EXIT_OK
    # 4. engines
    if args.no_engines:
        return status
    return max(status, build_trt_engines(result.out_dir, engine_options))


def build_aoti(model: "HIDiff", out_dir: Path, precision: Precision, force: bool) -> int:
    """AOTInductor packages beside the graphs (export.aoti_package); 1 if a build failed."""
    from export.aoti_package import build_machine_packages

    print("AOTInductor packages:")
    try:
        build_machine_packages(model, out_dir, precision, force=force, log=lambda message: print(f"  {message}"))
    except (RuntimeError, OSError) as exc:  # torch.export and inductor errors are RuntimeErrors
        print(f"  failed: {_one_line(exc)}")
        return EXIT_CHECK_FAILED
    return EXIT_OK


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def main(argv: Sequence[str] | None = None) -> int:
    from onnx.checker import ValidationError

    from export.graph_check import GraphCheckError
    from export.onnx_export import ExportError
    from export.pipeline import OutputDirError
    from export.verify import DriftError

    args = parse_args(argv)
    _quiet_exporter_logs()
    try:
        return run(args)
    except (BadInput, OutputDirError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (DriftError, GraphCheckError, ExportError, ValidationError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_CHECK_FAILED


def _quiet_exporter_logs() -> None:
    """torch.onnx logs a warning per missing torchvision op at import; none concern this model."""
    import logging

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
