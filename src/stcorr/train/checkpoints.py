"""Run-folder persistence: training checkpoints (atomic, pruned, exact resume), initial weights and the export.

``checkpoints/step_XXXXXXXX.pt`` holds the task, optimiser, scheduler, step and every process's RNG
states; :func:`export_run` writes the inference model (``config.json`` + ``model.safetensors``) and
``backbone.safetensors`` (every trained stage, layer4 included). Weights for ``--init``/``--teacher``
are read by the package's one weights loader (:func:`stcorr.loading.read_backbone_weights`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stcorr._atomic import atomic_path
from stcorr.checkpoint import load_state_dict_strict, write_safetensors
from stcorr.errors import CheckpointError, InputError, OutputWriteError
from stcorr.loading import BACKBONE_NAME, BackboneWeights, read_backbone_weights
from stcorr.model import (
    LITE_ARCHS,
    WEIGHTS_NAME,
    CorrespondenceModel,
    LiteCorrespondenceModel,
    model_from_config,
    write_model_files,
)
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
    "read_resume_checkpoint",
    "checkpoint_to_resume",
    "check_resumable",
    "check_run_folder",
    "make_run_folder",
    "rng_state",
    "set_rng_state",
    "CHECKPOINT_FORMAT",
    "payload_digest",
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


def export_run(
    out: Path, encoder: nn.Module, config: TrainConfig
) -> CorrespondenceModel | LiteCorrespondenceModel:
    """Write the inference model (``config.json`` + ``model.safetensors``) and ``backbone.safetensors``, each
    atomically; the run folder's other files (log, checkpoints) stay."""
    state = cpu_state(encoder)
    if config.arch in LITE_ARCHS:
        model = model_from_config(encoder.config)  # the student already is the inference architecture
    else:
        model = CorrespondenceModel(config.arch, stride=config.stride, input_space="lab")
    load_state_dict_strict(model, state)
    write_model_files(model, out)
    write_safetensors(state, out / BACKBONE_NAME)
    return model


_DIGEST_KEY = "sha256"


def _feed(digest: Any, value: Any) -> None:
    """Feed ``value`` (nested dicts, lists, tensors, numbers, strings) to ``digest`` in a canonical order."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{value!r}".encode())


def payload_digest(payload: Mapping[str, Any]) -> str:
    """sha256 of a checkpoint's content (every tensor's bytes, dtype and shape, and every other value), without
    its own ``"sha256"`` entry: torch does not check its zip CRCs, so damaged tensor data would load unnoticed."""
    digest = hashlib.sha256()
    _feed(digest, {key: value for key, value in payload.items() if key != _DIGEST_KEY})
    return digest.hexdigest()


def write_checkpoint(out: Path, step: int, payload: Mapping[str, Any], keep_last: int) -> None:
    """Write ``checkpoints/step_<step>.pt`` atomically, with the sha256 of its content inside
    (:func:`payload_digest`, checked by :func:`read_checkpoint`), then keep only the last ``keep_last`` (0: all).

    A write that fails (a full disk surfaces as torch's "unexpected pos") raises :class:`OutputWriteError`
    naming the free space; the earlier checkpoints are untouched.
    """
    path = out / CHECKPOINT_DIR / f"step_{step:08d}.pt"
    with atomic_path(path) as tmp:
        try:
            torch.save({**payload, _DIGEST_KEY: payload_digest(payload)}, tmp)
        except (RuntimeError, OSError) as exc:
            free = shutil.disk_usage(tmp.parent).free / 2**20
            raise OutputWriteError(
                f"cannot write the checkpoint {path}: {exc}. {free:.0f} MiB are free on that disk; free some "
                "space (or lower --keep-last), then continue with --resume"
            ) from exc
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
    """A training checkpoint (tensors only); :class:`CheckpointError` for an empty, truncated or foreign file."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"training checkpoint {path} is empty (0 bytes): it was never completely written")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        reason = str(exc).strip() or type(exc).__name__
        raise CheckpointError(f"cannot read training checkpoint {path} ({reason}); it is truncated or corrupt") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an stcorr training checkpoint")
    if _DIGEST_KEY not in checkpoint:
        logger.warning("%s has no checksum (written by an older stcorr): its content cannot be verified", path)
    elif payload_digest(checkpoint) != checkpoint[_DIGEST_KEY]:
        raise CheckpointError(f"training checkpoint {path} is corrupt: its content does not match the sha256 stored "
                              "in it (the file was damaged after it was written); resume from an earlier checkpoint")
    return checkpoint


def check_run_folder(out: Path) -> None:
    """Before any work: ``out`` must be a folder (or not exist yet) that this process can create and write to
    (:class:`InputError` for a file, :class:`OutputWriteError` for a read-only or otherwise unwritable place)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; the run folder holds checkpoints, the log and the "
                         "model: choose a folder path (new or holding a run to resume)")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"--out {out} cannot be created: {existing} is a file; choose another folder path")
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputWriteError(f"cannot write the run folder {out}: {existing or out} is not writable (read-only "
                               "disk or no permission); choose an --out on a writable disk")


def make_run_folder(out: Path) -> None:
    """Create the run folder (:class:`OutputWriteError` naming the reason if the system refuses)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create the run folder {out}: {exc.strerror or exc}; choose an --out on a "
                               "writable disk") from exc


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


def read_resume_checkpoint(path: Path, out: Path, resume: str | None) -> tuple[Path, dict[str, Any]]:
    """Read ``path``; for ``--resume`` (``resume="latest"``), an unreadable newest checkpoint of run folder ``out``
    falls back to the one before, with a warning naming both (an explicitly given checkpoint never falls back)."""
    candidates = [path]
    if resume == "latest":
        candidates = [p for _, p in reversed(list_checkpoints(out))]
    for index, candidate in enumerate(candidates):
        try:
            return candidate, read_checkpoint(candidate)
        except CheckpointError as exc:
            if index + 1 == len(candidates):
                raise
            logger.warning("%s; resuming from the previous checkpoint %s instead", exc, candidates[index + 1])
    raise AssertionError("unreachable")  # pragma: no cover


def check_resumable(checkpoint: Mapping[str, Any], stage: str, config: TrainConfig) -> None:
    if checkpoint["stage"] != stage:
        raise InputError(f"the checkpoint is from the {checkpoint['stage']} stage, not {stage}")
    changed = config_from_dict(checkpoint["config"]).differences(config)
    if changed:
        raise InputError("resuming needs the checkpoint's configuration; these differ: " + "; ".join(changed))
