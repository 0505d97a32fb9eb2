"""Test artifacts for the engine backends: a tiny random HI-Diff and its three graphs as ONNX files
with an export manifest, made once per test session.

The ONNX files are written here, not by export/onnx_export.py, so the engine tests do not depend
on the export module; the layout of ``manifest.json`` is the export's. The graphs are exported
with *static* shapes at :data:`SHAPE`: exporting the Restormer with dynamic height and width takes
about a minute of CPU on this 2-core machine, static about a quarter of that, and the engines'
behaviour does not depend on it (dynamic shapes are the export module's tests' business).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import torch

from engines.contracts import graph_contracts
from hidiff.config import DenoiserConfig, EncoderConfig, HIDiffConfig, RestormerConfig
from hidiff.graphs import graph_modules
from hidiff.model import HIDiff

SHAPE = (2, 3, 32, 48)  # (B, 3, H, W) of every image the ONNX graphs accept; batch 2 catches row mix-ups
OPSET = 18
TOLERANCE = 1e-4  # max |difference| between backends in fp32


def tiny_config() -> HIDiffConfig:
    """Prior (B, 16, 32); every block once: milliseconds per call on a CPU."""
    return HIDiffConfig(
        network_g=RestormerConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2),
                                  embed_dim=8),
        network_le=EncoderConfig(in_chans=6, embed_dim=8, block_num=1),
        network_le_dm=EncoderConfig(embed_dim=8, block_num=1),
        network_d=DenoiserConfig(in_channel=32, out_channel=32, inner_channel=32, block_num=3),
    )


@functools.cache
def tiny_model() -> HIDiff:
    """The same random model every time (seeded). Engines copy it; do not modify it in tests."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(1234)
    model = HIDiff(tiny_config()).eval()
    torch.random.set_rng_state(generator_state)
    return model


def sample_feeds(seed: int = 0, shape: tuple[int, int, int, int] = SHAPE) -> dict[str, dict[str, torch.Tensor]]:
    """Inputs for each graph: ``{graph: {input: tensor}}``, CPU, float32 (t int64)."""
    g = torch.Generator().manual_seed(seed)
    n, c = tiny_model().prior_shape
    b = shape[0]
    blur = torch.rand(shape, generator=g)
    z = torch.randn((b, n, c), generator=g)
    cond = torch.randn((b, n, c), generator=g)
    return {
        "le_dm": {"blur": blur},
        "denoise_step": {"z": z, "cond": cond, "t": torch.tensor([5], dtype=torch.int64)},
        "restormer": {"blur": blur, "prior": cond},
    }


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(folder: Path, files: dict[str, str], precision: str = "fp32", model: HIDiff | None = None) -> None:
    """``folder/manifest.json`` in the export's layout for ``{graph: file name}``."""
    model = model if model is not None else tiny_model()
    contracts = graph_contracts(*model.prior_shape)
    manifest = {
        "precision": precision,
        "model": {"config": model.config.to_dict(), "prior_tokens": model.config.prior_tokens,
                  "prior_channels": model.config.prior_channels},
        "graphs": {name: {"file": file, "sha256": sha256_file(folder / file), "contract": contracts[name].as_dict()}
                   for name, file in files.items()},
    }
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / "manifest.json")


def _export_graph(module: torch.nn.Module, args: tuple[torch.Tensor, ...], names: tuple[list[str], list[str]],
                  path: Path) -> None:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        torch.onnx.export(module, args, str(path), dynamo=True, input_names=names[0], output_names=names[1],
                          opset_version=OPSET, external_data=False, verbose=False)


@functools.cache
def exported_folder(root: Path) -> Path:
    """``root/onnx`` holding le_dm.onnx, denoise_step.onnx, restormer.onnx and manifest.json for
    :func:`tiny_model`, exported once per ``root`` (pass the session's base temp folder)."""
    folder = Path(root) / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_model()
    modules = graph_modules(model)
    contracts = graph_contracts(*model.prior_shape)
    feeds = sample_feeds()
    for name, module in modules.items():
        contract = contracts[name]
        args = tuple(feeds[name][n] for n in contract.input_names)
        _export_graph(module, args, (list(contract.input_names), list(contract.output_names)), folder / f"{name}.onnx")
    write_manifest(folder, {name: f"{name}.onnx" for name in modules})
    return folder
