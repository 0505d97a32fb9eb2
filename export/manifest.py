"""The export manifest: ``DIR/manifest.json``, what engine builds and runtimes read about the graphs.

Layout (keys other parts rely on are marked *)::

    {
      "format": "hidiff-deploy/onnx-export/1",
      "precision"*: "fp32" | "fp16",
      "model"*: {"config"*: HIDiffConfig.to_dict(), "prior_tokens"*: N, "prior_channels"*: C',
                 "parameters": {part: count}, "source": {"kind": ..., "files": {path: sha256}}},
      "schedule": {"T": 8, "variant": "gopro" | "ldm", "clip_denoised": bool, "time_offset": int,
                   "tables": {name: [T floats]}},
      "graphs"*: {name: {"file"*: "NAME.onnx", "sha256"*: ..., "contract"*: GraphContract.as_dict(),
                         "parameters": int, "op_counts": {op: count}, "float32_islands": {...}}},
      "opset": 18,
      "dynamic_shapes": {"batch": [1, 64], "height": [8, 8192, 8], "width": [8, 8192, 8]},
      "verification": {...},
      "versions": {"torch": ..., "onnx": ..., "onnxscript": ..., "onnxruntime": ..., "exporter": ...}
    }
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.artifacts import sha256_file
from engines.contracts import IMAGE_MULTIPLE, Precision, graph_contracts

if TYPE_CHECKING:
    from export.graph_check import GraphReport
    from export.verify import Verification
    from hidiff.model import HIDiff

FORMAT = "hidiff-deploy/onnx-export/1"
REPORT_NAME = "export_report.json"
SCHEDULE_TABLES = ("betas", "alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
                   "posterior_mean_coef1", "posterior_mean_coef2")


def schedule_entry(model: "HIDiff") -> dict[str, Any]:
    """T, the sampler variant and the coefficient tables baked into ``denoise_step``."""
    schedule = model.schedule
    return {
        "T": schedule.num_timesteps,
        # GoPro release: x0 clamped, the denoiser sees t + 1; LDM path (RealBlur): neither.
        "variant": "gopro" if schedule.clip_denoised else "ldm",
        "clip_denoised": bool(schedule.clip_denoised),
        "time_offset": int(schedule.time_offset),
        "tables": {name: [float(v) for v in getattr(schedule, name).cpu().tolist()] for name in SCHEDULE_TABLES},
    }


def library_versions() -> dict[str, str]:
    import onnx
    import onnxscript
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                "onnxscript": onnxscript.__version__, "exporter": "torch.onnx.export(dynamo=True)"}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return versions


def build_manifest(model: "HIDiff", precision: Precision, files: dict[str, Path], reports: dict[str, "GraphReport"],
                   verification: "Verification | None", source: dict[str, Any], opset: int,
                   dynamic_ranges: dict[str, list[int]]) -> dict[str, Any]:
    """The manifest of one export; ``files`` are the written graphs ({name: path}), hashed here."""
    contracts = graph_contracts(model.config.prior_tokens, model.config.prior_channels)
    graphs = {}
    for name, path in files.items():
        report = reports[name]
        graphs[name] = {
            "file": f"{name}.onnx",
            "sha256": sha256_file(path),
            "contract": contracts[name].as_dict(),
            "parameters": report.parameters,
            "op_counts": dict(report.op_counts),
            "float32_islands": report.islands.as_dict(),
        }
    return {
        "format": FORMAT,
        "precision": precision.value,
        "model": {
            "config": model.config.to_dict(),
            "prior_tokens": model.config.prior_tokens,
            "prior_channels": model.config.prior_channels,
            "parameters": {part: model.num_parameters(part) for part in ("restormer", "le_dm", "denoiser")},
            "source": source,
        },
        "schedule": schedule_entry(model),
        "graphs": graphs,
        "opset": opset,
        "dynamic_shapes": {**dynamic_ranges, "image_multiple": IMAGE_MULTIPLE},
        "verification": verification.as_dict() if verification is not None else None,
        "versions": library_versions(),
    }
