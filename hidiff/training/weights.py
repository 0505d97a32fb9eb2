"""Starting weights of a stage and the exported result.

Stage 2 starts from stage 1's Restormer and LE (official ``pretrain_network_g`` /
``pretrain_network_le``); LE_DM and the denoiser start from scratch, as in the official recipe.
A stage 2 started from a stage-2 file continues it: LE_DM and the denoiser are loaded too.
The export is one ``HIDiff.save`` file (safetensors, configuration embedded).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hidiff.checkpoint import load_safetensors, load_strict, read_official
from hidiff.model import HIDiff
from hidiff.training.checkpointing import load_checkpoint
from hidiff.training.config import TrainConfig

INIT_PARTS = ("restormer", "le")
STAGE2_PARTS = ("le_dm", "denoiser")  # trained by stage 2 only (a stage-1 file holds their random init)


def _part(state: dict[str, torch.Tensor], part: str) -> dict[str, torch.Tensor]:
    prefix = f"{part}."
    return {k[len(prefix):]: (v.float() if v.is_floating_point() else v) for k, v in state.items() if k.startswith(prefix)}


def read_model_state(path: str | Path) -> tuple[dict[str, torch.Tensor], int | None]:
    """(full HIDiff state dict, the training stage that wrote it or None) from our export
    (.safetensors) or a training checkpoint (.pt)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        tensors, meta = load_safetensors(path)
        training = meta.get("training")
        stage = training.get("stage") if isinstance(training, dict) else None
        return tensors, int(stage) if stage is not None else None
    if path.suffix == ".pt":
        checkpoint = load_checkpoint(path)
        return checkpoint["model"], int(checkpoint["stage"])
    raise ValueError(f"init weights {path}: expected a .safetensors export or a .pt training checkpoint")


def load_init_weights(model: HIDiff, cfg: TrainConfig) -> list[str]:
    """Load the configured starting weights into ``model``; returns what was loaded, for the log.

    Stage 2 without any starting weights is refused: its target prior would come from an
    untrained LE.
    """
    loaded: list[str] = []
    if cfg.init is not None:
        state, trained_by = read_model_state(cfg.init)
        parts = INIT_PARTS + STAGE2_PARTS if cfg.stage == 2 and trained_by == 2 else INIT_PARTS
        for part in parts:
            sub = _part(state, part)
            if not sub:
                raise ValueError(
                    f"init weights {cfg.init} hold no {part} weights; stage 2 starts from a stage-1 export "
                    "(which includes le) or a stage-1 checkpoint"
                )
            load_strict(getattr(model, part), sub, f"{cfg.init} ({part})")
        loaded.append(str(cfg.init))
    if cfg.init_net_g is not None:
        load_strict(model.restormer, read_official(cfg.init_net_g), f"net_g ({cfg.init_net_g})")
        loaded.append(str(cfg.init_net_g))
    if cfg.init_net_le is not None:
        load_strict(model.le, read_official(cfg.init_net_le), f"net_le ({cfg.init_net_le})")  # type: ignore[arg-type]
        loaded.append(str(cfg.init_net_le))
    if cfg.stage == 2 and not (cfg.init or (cfg.init_net_g and cfg.init_net_le)):
        raise ValueError(
            "stage 2 needs stage 1's Restormer and LE: set train.init to the stage-1 export "
            "(OUT/model.safetensors) or checkpoint, or train.init_net_g and train.init_net_le to official .pth files"
        )
    return loaded


def export_weights(model: HIDiff, path: str | Path, *, fp16: bool = False, include_stage1_encoder: bool = True,
                   **metadata: Any) -> Path:
    """Save ``model`` with HIDiff.save (atomic safetensors, config embedded); optionally float16,
    optionally without LE (inference never runs it)."""
    target = model
    if not include_stage1_encoder and model.le is not None:
        target = HIDiff(model.config)
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("le.")}
        load_strict(target, state, "export")
    target.save(path, dtype=torch.float16 if fp16 else None, **metadata)
    return Path(path)
