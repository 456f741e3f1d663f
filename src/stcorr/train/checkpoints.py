"""Run-folder persistence: training checkpoints (atomic, pruned, exact resume), initial weights and the export.

``checkpoints/step_XXXXXXXX.pt`` holds the task, optimiser, scheduler, step and every process's RNG
states; :func:`export_run` writes the inference model (``config.json`` + ``model.safetensors``) and
``backbone.safetensors`` (every trained stage, layer4 included). Weights for ``--init``/``--teacher``
are read by the package's one weights loader (:func:`stcorr.loading.read_backbone_weights`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from stcorr._atomic import atomic_path
from stcorr.checkpoint import load_state_dict_strict
from stcorr.errors import CheckpointError, InputError
from stcorr.loading import BACKBONE_NAME, BackboneWeights, read_backbone_weights
from stcorr.model import WEIGHTS_NAME, CorrespondenceModel
from stcorr.train.logs import LOG_NAME
from stcorr.train.presets import TrainConfig, config_from_dict

__all__ = [
    "BACKBONE_NAME",
    "CHECKPOINT_DIR",
    "load_init_weights",
    "export_run",
    "list_checkpoints",
    "write_checkpoint",
    "read_checkpoint",
    "checkpoint_to_resume",
    "check_resumable",
    "rng_state",
    "set_rng_state",
    "CHECKPOINT_FORMAT",
]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FORMAT = 1
_CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")


def load_init_weights(encoder: CorrespondenceModel, spec: str | os.PathLike[str] | None) -> BackboneWeights | None:
    """Initialise ``encoder`` from ``spec`` (None or ``"none"``: keep the random initialisation).

    Every built stage must be in the weights, except layer4: inference weights stop at layer3, so a
    missing layer4 keeps its random initialisation (the only non-strict part). Extra stages are ignored.
    """
    if spec is None or os.fspath(spec) == "none":
        return None
    weights = read_backbone_weights(spec)
    if weights.arch != encoder.arch:
        raise CheckpointError(
            f"{weights.source} holds {weights.arch} weights but the model is {encoder.arch}; pass --arch {weights.arch}"
        )
    state = dict(weights.state_dict)
    own = encoder.state_dict()
    missing_layer4 = [key for key in own if key.startswith("layer4.") and key not in state]
    if missing_layer4:
        logger.info("%s has no layer4: it keeps its random initialisation", weights.source)
        state.update({key: own[key] for key in missing_layer4})
    load_state_dict_strict(encoder, state)
    return weights


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().contiguous().cpu() for key, value in module.state_dict().items()}


def export_run(out: Path, encoder: nn.Module, config: TrainConfig) -> CorrespondenceModel:
    """Write the inference model (``config.json`` + ``model.safetensors``) and ``backbone.safetensors``."""
    state = cpu_state(encoder)
    model = CorrespondenceModel(config.arch, stride=config.stride, input_space="lab")
    load_state_dict_strict(model, state)
    model.save_pretrained(out)
    with atomic_path(out / BACKBONE_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "library": "stcorr", "arch": config.arch})
    return model


def write_checkpoint(out: Path, step: int, payload: Mapping[str, Any], keep_last: int) -> None:
    """Write ``checkpoints/step_<step>.pt`` atomically, then keep only the last ``keep_last`` (0: all)."""
    with atomic_path(out / CHECKPOINT_DIR / f"step_{step:08d}.pt") as tmp:
        torch.save(dict(payload), tmp)
    if keep_last > 0:
        for _, old in list_checkpoints(out)[:-keep_last]:
            old.unlink(missing_ok=True)


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the run's checkpoints, oldest first."""
    folder = Path(out) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


def rng_state() -> dict[str, torch.Tensor | None]:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rng_state(state: Mapping[str, torch.Tensor | None]) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f"cannot read training checkpoint {path}: {exc}") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an stcorr training checkpoint")
    return checkpoint


def checkpoint_to_resume(out: Path, resume: str | None) -> Path | None:
    """The checkpoint ``resume`` names in run folder ``out`` (None: a fresh run, which ``out`` must not hold)."""
    existing = list_checkpoints(out)
    if resume is None:
        if existing or (out / LOG_NAME).exists() or (out / WEIGHTS_NAME).exists():
            raise InputError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return None
    if resume == "latest":
        return existing[-1][1] if existing else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def check_resumable(checkpoint: Mapping[str, Any], stage: str, config: TrainConfig) -> None:
    if checkpoint["stage"] != stage:
        raise InputError(f"the checkpoint is from the {checkpoint['stage']} stage, not {stage}")
    changed = config_from_dict(checkpoint["config"]).differences(config)
    if changed:
        raise InputError("resuming needs the checkpoint's configuration; these differ: " + "; ".join(changed))
