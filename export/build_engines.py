"""Export HI-Diff to three ONNX graphs, check them, build TensorRT engines, and compare them.

    hidiff-build-engines [model options] --precision fp32|fp16 [--no-engines] [--no-aoti] --out DIR
    python export/build_engines.py ...      (the same, with the project installed: pip install -e .)

Model options (one of):
    --net-g F --net-le-dm F --net-d F [--options YML]   the official release files
    --weights F                                          a file written by HIDiff.save
    (none)                                               the embedded default model

Steps:
    1. check flags, output folder, model and libraries (cheapest first), and a requested DLA core
    2. export le_dm, denoise_step, restormer to DIR, checked and compared with PyTorch in
       ONNX Runtime (export.pipeline: all files appear together, or none)
    3. print the node report; unless --no-aoti, write AOTInductor packages (export.aoti_package):
       CPU FP32, and on a GPU machine CUDA packages with the fused Triton kernels compiled in,
       dynamic and at each profile's optimum shape
    4. unless --no-engines: build TensorRT engines (export.trt_build); where TensorRT or a GPU
       is missing, say which engines were not built and why, and print the trtexec lines
    5. unless --no-engines or --no-compare: Polygraphy compares ONNX Runtime with TensorRT per
       graph at each profile's optimum shape, or with the PyTorch graphs where no plan was built
       (export.compare); the figures go into DIR/export_report.json

Plans built elsewhere (``trtexec``) are described for the runtime by ``python -m export.adopt_plan``.

Exit status: 0 done (also when engines could not be built because TensorRT is not installed),
1 a graph failed its checks, drifted from PyTorch or from ONNX Runtime, or an engine build failed,
2 bad input (missing file, checkpoint/options mismatch, unusable output folder, bad flags, a
missing export library, --precision int8/fp8, --dla-core on a GPU without DLA),
3 TensorRT was expected (--require-tensorrt, or a TensorRT module is installed) and no plan was built.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.contracts import Precision
from engines.version import version_text

if TYPE_CHECKING:
    from export.trt_build import BuildReport
    from hidiff.model import HIDiff

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_NO_ENGINES = 0, 1, 2, 3
FLAVOURS = ("auto", "tensorrt", "tensorrt_rtx")
PROG = "hidiff-build-engines"
EXPORT_LIBRARIES = ("onnx", "onnxscript", "onnxruntime")
TENSORRT_MODULES = ("tensorrt", "tensorrt_bindings", "tensorrt_rtx", "tensorrt_rtx_bindings")

# 8-bit engines are refused, with the measurement that decided it (python -m bench.int8_accuracy,
# the demonstration model: INT8 as ONNX Runtime's static QDQ quantization of the three graphs, the
# form TensorRT builds explicit INT8 engines from, calibrated on blurred crops of two scikit-image
# photographs; FP8 as E4M3 rounding in PyTorch; both against the FP32 output on three others).
REFUSED_PRECISIONS = {
    "int8": ("INT8 is not offered: static INT8 quantization of the graphs (ONNX Runtime QDQ, per-channel weights, "
             "MinMax calibration on blurred scikit-image photographs) leaves the output at 30.3 dB PSNR from FP32 "
             "on three held-out photographs (31.2 dB with only the Restormer in INT8), where FP16 stays at 62-64 dB; "
             "measured with python -m bench.int8_accuracy --formats fp16,int8. Use --precision fp16"),
    "fp8": ("FP8 is not offered: E4M3 rounding of every convolution's and linear layer's weights and inputs "
            "(simulated in PyTorch, each input scaled by its own maximum) leaves the output at 32.8 dB PSNR from FP32 "
            "on three held-out photographs (24.6 dB on the worst), where FP16 stays at 62-64 dB; measured with "
            "python -m bench.int8_accuracy --formats fp16,fp8. Use --precision fp16"),
}


class BadInput(ValueError):
    """A command-line problem the user fixes; printed as one line, exit status 2."""


@dataclass(frozen=True)
class EngineOptions:
    profiles: tuple[str, ...]  # "MIN:OPT:MAX" strings, parsed by export.trt_build.parse_profile
    opt_level: int
    flavour: str
    force: bool
    workspace_gib: float | None = None
    dla_core: int | None = None
    require_tensorrt: bool = False
    compare: bool = True


def _positive_gib(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GiB (e.g. 2 or 0.5)") from exc
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the workspace must be more than 0 GiB")
    return value


def _core_index(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a DLA core index (0, 1, ...)") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: DLA cores are numbered from 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export HI-Diff to ONNX (le_dm, denoise_step, restormer), verify it, build TensorRT engines.",
        epilog="Exit status: 0 done, 1 a check or build failed, 2 bad input, 3 TensorRT expected but no plan built.",
    )
    parser.add_argument("--version", action="version", version=version_text(PROG))
    model = parser.add_argument_group("model (default: the embedded model)")
    model.add_argument("--net-g", type=Path, help="official net_g .pth (the prior-guided Restormer)")
    model.add_argument("--net-le-dm", type=Path, help="official net_le_dm .pth (the latent encoder)")
    model.add_argument("--net-d", type=Path, help="official net_d .pth (the denoiser)")
    model.add_argument("--options", type=Path, help="official option file (YAML) the .pth files were trained with")
    model.add_argument("--weights", type=Path, help="a .safetensors file written by HIDiff.save")
    parser.add_argument("--precision", choices=[*(p.value for p in Precision), *REFUSED_PRECISIONS],
                        default=Precision.FP16.value,
                        help="graph precision; fp16 graphs keep float32 statistics (default fp16); "
                             "int8 and fp8 are refused with the measured reason")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--force", action="store_true", help="replace an export already in --out and rebuild engines")
    engines = parser.add_argument_group("TensorRT engines")
    engines.add_argument("--no-engines", action="store_true", help="only export and check the ONNX graphs")
    engines.add_argument("--profile", action="append", default=[], metavar="MIN:OPT:MAX",
                         help="BxHxW:BxHxW:BxHxW, repeatable (default 1x256x256:1x720x1280:4x1080x1920); the CUDA "
                              "AOTInductor packages get a package of their own at each optimum shape")
    engines.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="N",
                         help="TensorRT builder optimization level 0..5 (default 3)")
    engines.add_argument("--workspace", type=_positive_gib, default=None, metavar="GIB",
                         help="TensorRT's workspace memory pool limit in GiB (default: TensorRT's, the GPU's "
                              "memory; keep it small on a Jetson, where the GPU shares system memory)")
    engines.add_argument("--dla-core", type=_core_index, default=None, metavar="N",
                         help="build for the Deep Learning Accelerator core N with GPU fallback (Jetson AGX "
                              "Orin / Orin NX); needs fp16 graphs; refused on GPUs without DLA")
    engines.add_argument("--trt-flavour", choices=FLAVOURS, default="auto", help="TensorRT or TensorRT-RTX (default auto)")
    engines.add_argument("--require-tensorrt", action="store_true",
                         help="exit 3 unless every plan was built or reused (default: only when TensorRT is installed)")
    engines.add_argument("--no-compare", action="store_true",
                         help="skip Polygraphy's comparison of the engines (or, without them, of the PyTorch "
                              "graphs) with ONNX Runtime at each profile's optimum shape; on a CPU the PyTorch "
                              "Restormer at 720 x 1280 takes minutes")
    parser.add_argument("--aoti", action=argparse.BooleanOptionalAction, default=True,
                        help="also write AOTInductor packages (.pt2): CPU FP32, and CUDA in --precision where a GPU "
                             "is (default on; minutes of C++ compilation on a small CPU)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def load_model(args: argparse.Namespace) -> tuple["HIDiff", dict[str, Any]]:
    """The model the options name, and its description for the manifest; BadInput if unusable."""
    from export.model_source import ModelSource, ModelSourceError

    try:
        source = ModelSource.from_options(args.net_g, args.net_le_dm, args.net_d, args.options, args.weights)
        return source.load(), source.describe()
    except ModelSourceError as exc:
        raise BadInput(str(exc)) from exc


def check_export_libraries() -> None:
    """BadInput naming the export libraries that are missing, before any work is done."""
    missing = [name for name in EXPORT_LIBRARIES if not _importable(name)]
    if missing:
        raise BadInput(f"the ONNX export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                       "installed: pip install -e '.[onnx]' (CPU), '.[cu12]' or '.[cu13]' (x86 GPUs), '.[jetson]' plus "
                       "NVIDIA's Jetson build of onnxruntime-gpu (Jetson)")


def check_profiles(texts: Sequence[str]) -> None:
    """Reject malformed --profile values before the export runs."""
    from export.trt_build import parse_profile

    for text in texts:
        try:
            parse_profile(text)
        except ValueError as exc:
            raise BadInput(f"--profile {text}: {exc}") from exc


def check_dla(options: EngineOptions, precision: Precision) -> None:
    """Refuse --dla-core where it cannot work, before the export runs: DLA computes in FP16 or
    INT8 only (a strongly typed build takes the precision from the graphs), TensorRT-RTX has no
    DLA, and a GPU without DLA cores (every discrete GPU) has none to build for."""
    from export.trt_build import DlaUnavailable, dla_cores

    if options.dla_core is None:
        return
    if precision is not Precision.FP16:
        raise BadInput(f"--dla-core {options.dla_core} with --precision {precision.value}: the DLA runs FP16 and INT8 "
                       "only, and the engine's precision comes from the graphs; use --precision fp16")
    if options.flavour == "tensorrt_rtx":
        raise BadInput(f"--dla-core {options.dla_core} with --trt-flavour tensorrt_rtx: TensorRT-RTX has no DLA support")
    try:
        cores = dla_cores(options.flavour)
    except DlaUnavailable as exc:  # TensorRT or a GPU is missing: the engine step reports it
        print(f"engines: --dla-core {options.dla_core} not checked: {exc}")
        return
    if options.dla_core >= cores.count:
        have = "no DLA cores" if cores.count == 0 else f"DLA cores 0..{cores.count - 1} only"
        raise BadInput(f"--dla-core {options.dla_core}: {cores.device} has {have} (TensorRT's builder.num_DLA_cores = "
                       f"{cores.count}); DLA exists on Jetson AGX Orin and Orin NX (2 cores) and Orin Nano (1). "
                       "Leave out --dla-core to build for the GPU")


def _importable(name: str) -> bool:
    """Whether module ``name`` is installed (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules holds None for it (its import was blocked)
        return False


def tensorrt_installed() -> bool:
    """Whether a TensorRT module is installed at all (importable or not)."""
    return any(_importable(name) for name in TENSORRT_MODULES)


def build_trt_engines(out_dir: Path, options: EngineOptions) -> tuple[int, "BuildReport"]:
    """Build the plans beside the ONNX graphs; return the exit status and the build report."""
    from export import trt_build

    profiles = [trt_build.parse_profile(p) for p in options.profiles] or [trt_build.DEFAULT_PROFILE]
    print("engines:")
    try:
        report = trt_build.build_engines(out_dir, out_dir, profiles, opt_level=options.opt_level,
                                         workspace_gib=options.workspace_gib, dla_core=options.dla_core,
                                         timing_cache=out_dir / trt_build.TIMING_CACHE_NAME, flavour=options.flavour,
                                         force=options.force, log=lambda message: print(f"  {message}"))
    except trt_build.DlaRefused as exc:
        raise BadInput(f"--dla-core {options.dla_core}: {exc}") from exc
    print("engine summary:")
    for line in report.lines():
        print(f"  {line}")
    missing = [r for r in report.results if r.status == "not built"]
    if missing:
        print(f"engines not built here: {', '.join(r.graph for r in missing)}. On a machine with TensorRT, run:")
        for line in trt_build.trtexec_commands(out_dir, out_dir, profiles, graphs=[r.graph for r in missing],
                                               opt_level=options.opt_level, workspace_gib=options.workspace_gib,
                                               dla_core=options.dla_core):
            print(f"  {line}")
        print(f"  then describe each plan for the runtime: python -m export.adopt_plan {out_dir}/GRAPH.plan "
              f"--onnx {out_dir}")
    if any(r.status == "failed" for r in report.results):
        return EXIT_CHECK_FAILED, report
    expected = options.require_tensorrt or report.flavour is not None or tensorrt_installed()
    if missing and expected:
        why = "--require-tensorrt was given" if options.require_tensorrt else "a TensorRT module is installed"
        print(f"error: no TensorRT plan was built although {why}: {missing[0].reason}", file=sys.stderr)
        return EXIT_NO_ENGINES, report
    return EXIT_OK, report


def compare_engines(model: "HIDiff", out_dir: Path, options: EngineOptions, report: "BuildReport") -> int:
    """Polygraphy's comparison after the build, into export_report.json; 1 if a graph drifted."""
    from export import compare, trt_build

    profiles = [trt_build.parse_profile(p) for p in options.profiles] or [trt_build.DEFAULT_PROFILE]
    plans = {r.graph: r.plan for r in report.results if r.status in ("built", "reused") and r.plan is not None}
    print("comparison:")
    result = compare.compare_export(out_dir, model, profiles, plans=plans, log=lambda message: print(f"  {message}"))
    compare.write_to_report(out_dir, result)
    for line in result.lines():
        print(f"  {line}")
    return EXIT_OK if result.ok else EXIT_CHECK_FAILED


def run(args: argparse.Namespace) -> int:
    from export.graph_check import format_table
    from export.onnx_export import check_exporter_versions
    from export.pipeline import check_output_dir, export_onnx_dir

    # 1. everything a user can get wrong, cheapest first: flags, output folder, libraries, model, DLA
    if args.precision in REFUSED_PRECISIONS:
        raise BadInput(f"--precision {args.precision}: {REFUSED_PRECISIONS[args.precision]}")
    precision = Precision.parse(args.precision)
    engine_options = EngineOptions(tuple(args.profile), args.opt_level, args.trt_flavour, args.force,
                                   args.workspace, args.dla_core, args.require_tensorrt, not args.no_compare)
    check_profiles(engine_options.profiles)  # the packages take their optimum shapes too
    check_output_dir(args.out, args.force)
    check_export_libraries()
    try:
        check_exporter_versions()
    except RuntimeError as exc:
        raise BadInput(str(exc)) from exc
    model, source = load_model(args)
    if not args.no_engines:
        check_dla(engine_options, precision)
    print(f"model: {source['kind']}, {model.num_parameters():,} parameters, prior {model.prior_shape}")
    # 2. export, check, compare, write
    result = export_onnx_dir(model, args.out, precision, force=args.force, source=source)
    # 3. the report
    print(format_table(list(result.reports.values())))
    print(f"wrote {', '.join(p.name for p in result.files.values())}, manifest.json, export_report.json to {result.out_dir}")
    status = build_aoti(model, result.out_dir, precision, engine_options, args.force) if args.aoti else EXIT_OK
    if args.no_engines:
        return status
    # 4. engines
    built, report = build_trt_engines(result.out_dir, engine_options)
    # 5. Polygraphy's comparison of what was built (or of the PyTorch graphs where nothing was)
    if engine_options.compare and built != EXIT_CHECK_FAILED:
        compared = compare_engines(model, result.out_dir, engine_options, report)
        built = compared if built == EXIT_OK else built
    return max(status, built)


def build_aoti(model: "HIDiff", out_dir: Path, precision: Precision, options: EngineOptions, force: bool) -> int:
    """AOTInductor packages beside the graphs (export.aoti_package), with a CUDA package of its own
    for each profile's optimum shape; 1 if a build failed."""
    from export.aoti_package import build_machine_packages

    print("AOTInductor packages:")
    try:
        build_machine_packages(model, out_dir, precision, shapes=package_shapes(options.profiles), force=force,
                               log=lambda message: print(f"  {message}"))
    except (RuntimeError, OSError) as exc:  # torch.export and inductor errors are RuntimeErrors
        print(f"  failed: {_one_line(exc)}")
        return EXIT_CHECK_FAILED
    return EXIT_OK


def package_shapes(profiles: Sequence[str]) -> list[tuple[int, int, int]]:
    """The (batch, height, width) shapes that get CUDA packages of their own: each profile's
    optimum, padded to the image multiple (the default profile's: 1x720x1280)."""
    from export import trt_build

    parsed = [trt_build.parse_profile(p) for p in profiles] or [trt_build.DEFAULT_PROFILE]
    return sorted({profile.padded().opt for profile in parsed})


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _check_failures() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "a graph failed its checks" (exit 1); onnx's only where it imports."""
    from export.graph_check import GraphCheckError
    from export.onnx_export import ExportError
    from export.verify import DriftError

    failures: tuple[type[BaseException], ...] = (DriftError, GraphCheckError, ExportError)
    try:
        from onnx.checker import ValidationError
    except ImportError:
        return failures
    return (*failures, ValidationError)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)  # before any optional import: --help and --version need none of them
    from export.pipeline import OutputDirError

    _quiet_exporter_logs()
    failures = _check_failures()
    try:
        return run(args)
    except (BadInput, OutputDirError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except failures as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_CHECK_FAILED


def _quiet_exporter_logs() -> None:
    """torch.onnx logs a warning per missing torchvision op at import; none concern this model."""
    import logging

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
