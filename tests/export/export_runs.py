"""The export runs shared by the export tests, made once per test session:

- an fp32 run of the real command (``python export/build_engines.py``, a subprocess) on a small
  random HI-Diff, and at the same time, in this process (one core each on a 2-core machine), an
  fp16 run of the command's ``main`` on the same model, then the ``le_dm`` graph of a model with
  the GoPro release's 4 x 4 token grid, for the adaptive pooling at sizes where H/16 is not an
  integer.

Why two models: the dynamo exporter traces and decomposes with symbolic shapes at tens of
milliseconds per node, and the Restormer of a group-4 model has a HIM at seven levels. With
group 2 the HIMs of levels 2 and 3 drop out (their group is 1) and the export takes about 60 %
of the time; but then LE_DM pools (H/4) x (W/4) into 2 x 2 bins, and since H/4 is always even the
bins are always equal. The group-4 ``le_dm`` covers the unequal bins.

The small model has a Restormer block at full resolution (encoder and decoder level 1) and at the
bottleneck, and a HIM at levels 1 and refinement; more blocks would only repeat the same nodes.
"""
from __future__ import annotations

import functools
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from hidiff.config import DenoiserConfig, EncoderConfig, HIDiffConfig, RestormerConfig
from hidiff.model import HIDiff

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "export" / "build_engines.py"
MDTA_BLOCKS = 3  # encoder level 1, bottleneck, decoder level 1


def export_test_config(group: int = 2) -> HIDiffConfig:
    """Prior (B, group**2, 32); Restormer blocks at levels 1 and 4 only, no refinement blocks."""
    return HIDiffConfig(
        network_g=RestormerConfig(dim=8, num_blocks=(1, 0, 0, 1), num_refinement_blocks=0, heads=(1, 1, 2, 2),
                                  embed_dim=8, group=group),
        network_le=EncoderConfig(in_chans=6, embed_dim=8, block_num=1, group=group),
        network_le_dm=EncoderConfig(embed_dim=8, block_num=1, group=group),
        network_d=DenoiserConfig(in_channel=32, out_channel=32, inner_channel=32, block_num=3, group=group),
    )


def make_model(seed: int = 0, group: int = 2) -> HIDiff:
    """A random model (seeded). Every parameter is perturbed so that none keeps its initial
    constant (LayerNorm weights of ones, temperatures of one): a graph that dropped or mixed up
    such a parameter would then show, and the exporter cannot merge equal initializers."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = HIDiff(export_test_config(group)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    torch.random.set_rng_state(state)
    return model


@dataclass(frozen=True)
class CliRun:
    argv: tuple[str, ...]
    out_dir: Path
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass(frozen=True)
class ExportRuns:
    weights: Path  # the small model (group 2), saved with HIDiff.save
    fp32: CliRun  # with engines requested: on a machine without TensorRT they are reported "not built"
    fp16: CliRun  # --no-engines
    le_dm_group4: Path  # le_dm.onnx (fp32) of make_model(group=4)

    def model(self) -> HIDiff:
        return HIDiff.load(self.weights)


def _export_le_dm_group4(path: Path) -> None:
    from export.onnx_export import export_graphs

    graph = export_graphs(make_model(group=4), "fp32", names=("le_dm",), progress=False)["le_dm"]
    onnx.save_model(graph.model, str(path))


def _run_in_process(argv: tuple[str, ...], out_dir: Path) -> CliRun:
    """``build_engines.main(argv)`` in this process, its output captured."""
    import contextlib
    import io

    from export.build_engines import main

    stdout, stderr = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        returncode = main(list(argv))
    return CliRun(("build_engines.main", *argv), out_dir, returncode, stdout.getvalue(), stderr.getvalue(),
                  time.perf_counter() - start)


def installed_env() -> dict[str, str]:
    """The environment of a subprocess that runs a script of this checkout as ``pip install -e .``
    would make it importable (the scripts carry no sys.path fix of their own)."""
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@functools.cache
def export_runs(base: Path) -> ExportRuns:
    """The fp32 run as a subprocess (the script as a user starts it) while this process does the
    fp16 run through ``main`` and then the group-4 ``le_dm``: about equal halves of the work."""
    base.mkdir(parents=True, exist_ok=True)
    weights = base / "export_test_model.safetensors"
    make_model().save(weights)
    fp32_dir, fp16_dir = base / "onnx_fp32", base / "onnx_fp16"
    # --no-aoti: the AOTInductor packages have tests of their own (tests/export/test_aoti_package.py).
    fp32_argv = (sys.executable, str(SCRIPT), "--weights", str(weights), "--precision", "fp32", "--no-aoti",
                 "--out", str(fp32_dir))
    with open(base / "fp32.out", "w+") as out, open(base / "fp32.err", "w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(fp32_argv, cwd=REPO, stdout=out, stderr=err, text=True, env=installed_env())
        try:
            fp16 = _run_in_process(("--weights", str(weights), "--precision", "fp16", "--no-engines", "--no-aoti",
                                    "--out", str(fp16_dir)), fp16_dir)
            le_dm_group4 = base / "le_dm_group4.onnx"
            _export_le_dm_group4(le_dm_group4)
        finally:
            returncode = process.wait(timeout=900)
        out.seek(0)
        err.seek(0)
        fp32 = CliRun(fp32_argv, fp32_dir, returncode, out.read(), err.read(), time.perf_counter() - start)
    return ExportRuns(weights, fp32, fp16, le_dm_group4)
