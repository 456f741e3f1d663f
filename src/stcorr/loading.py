"""``load_model``: one entry point for every way of naming weights.

Accepted forms of ``name_or_path``:

=====================================  ==========================================================
``None``                               the embedded default model shipped inside the package
a manifest name (``stt-r18-s8``, ...)  see ``weights_manifest.json`` / ``stcorr models``
``hf-hub:org/repo[@revision]``         any Hub repo with ``config.json`` + ``model.safetensors``
a folder                               ``config.json`` + ``model.safetensors`` (``save_pretrained``)
a ``.safetensors`` file                config from a sibling ``config.json``, else from the keys + ``stride``
a ``.pth`` / ``.pt`` checkpoint        the authors' release (MMCV keys) or torchvision keys; needs ``stride``
=====================================  ==========================================================

Weights are always matched strictly: a missing or unexpected key is an error that lists them.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from stcorr.checkpoint import detect_arch, load_state_dict_strict, read_pth, read_safetensors, torchvision_keys
from stcorr.errors import CheckpointError, DeviceError, InputError, UnknownModelError, WeightsUnavailableError
from stcorr.hub import fetch_hub_file, verify_file
from stcorr.manifest import ManifestEntry, default_model_name, load_manifest
from stcorr.model import CONFIG_NAME, WEIGHTS_NAME, CorrespondenceModel

__all__ = ["load_model", "load_encoder", "resolve_device", "available_devices", "stcorr_home", "release_dir"]

logger = logging.getLogger(__name__)

HF_PREFIX = "hf-hub:"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def available_devices() -> list[str]:
    """The devices this machine can run on: ``cpu``, then ``cuda:0``, ``cuda:1``, ... and ``mps`` if present."""
    devices = ["cpu"] + [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    return devices + (["mps"] if mps is not None and mps.is_available() else [])


def _device_count(kind: str) -> int:
    if kind == "cpu":
        return 1
    if kind == "cuda":
        return torch.cuda.device_count()
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        return int(mps is not None and mps.is_available())
    return 0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; anything else is checked against this machine.

    Raises:
        DeviceError: the device is not a torch device, or this machine has no such device; the message
            lists :func:`available_devices`.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = ", ".join(available_devices())
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise DeviceError(f"{device!r} is not a device name; this machine has: {available}") from exc
    count = _device_count(chosen.type)
    if count == 0 or (chosen.index is not None and chosen.index >= count):
        raise DeviceError(f"there is no {str(chosen)!r} device on this machine; it has: {available}")
    return chosen


def stcorr_home() -> Path:
    """Folder for converted release checkpoints: ``$STCORR_HOME``, default ``~/.cache/stcorr``."""
    return Path(os.environ.get("STCORR_HOME", Path.home() / ".cache" / "stcorr")).expanduser()


def release_dir(name: str) -> Path:
    """Where ``load_model(name)`` looks for a converted release checkpoint."""
    return stcorr_home() / name


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    stride: int | None = None,
) -> CorrespondenceModel:
    """Load a correspondence model in eval mode on ``device`` (default: CUDA if available, else CPU).

    Args:
        name_or_path: see the module docstring; ``None`` gives the embedded default model.
        device: target device.
        revision: Hub revision overriding a manifest pin or an ``@revision`` suffix.
        local_files_only: never use the network; ``None`` follows ``HF_HUB_OFFLINE``.
        cache_dir: Hugging Face cache folder (default: the Hub's own).
        stride: 8 or 4. Required for checkpoints without a config (``.pth``, bare ``.safetensors``);
            overrides the stride of any other source (the weights are stride-agnostic).

    Raises:
        UnknownModelError, WeightsUnavailableError, ChecksumError, CheckpointError.
    """
    target = resolve_device(device)
    model = _load_cpu(
        name_or_path, revision=revision, local_files_only=local_files_only, cache_dir=cache_dir, stride=stride
    )
    return model.to(target).eval()


def load_encoder(name_or_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> torch.nn.Module:
    """:func:`load_model`, or a baseline encoder for the names of :data:`stcorr.baselines.BASELINES`
    (``lab-pixels``, ``random-r18``, ``efficientnet-lite0``): what the CLI and the evaluation accept."""
    from stcorr.baselines import BASELINES, load_baseline

    if isinstance(name_or_path, str) and name_or_path in BASELINES:
        return load_baseline(name_or_path, device=resolve_device(kwargs.get("device")))
    return load_model(name_or_path, **kwargs)


def _load_cpu(
    name_or_path: str | os.PathLike[str] | None,
    *,
    revision: str | None,
    local_files_only: bool | None,
    cache_dir: str | os.PathLike[str] | None,
    stride: int | None,
) -> CorrespondenceModel:
    if name_or_path is None:
        return _load_embedded_default(stride)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InputError(
            f"expected a model name, 'hf-hub:org/repo', a path, or None for the default model; got a "
            f"{type(name_or_path).__name__} ({name_or_path!r})"
        )
    spec = os.fspath(name_or_path)
    if isinstance(spec, bytes):
        raise InputError(f"expected a str path, got bytes {spec!r}; decode it first")
    if spec.startswith(HF_PREFIX):
        return _load_hub_repo(spec[len(HF_PREFIX) :], revision, local_files_only, cache_dir, stride)
    entries = load_manifest()
    if spec in entries:
        return _load_entry(entries[spec], revision, local_files_only, cache_dir, stride)
    path = Path(spec).expanduser()
    if path.exists():
        return _load_path(path, stride)
    hint = f" Hub repos need the '{HF_PREFIX}' prefix: '{HF_PREFIX}{spec}'." if spec.count("/") == 1 else ""
    raise UnknownModelError(
        f"{spec!r} is neither a manifest name, an '{HF_PREFIX}org/repo' id, nor an existing path. "
        f"Manifest names: {', '.join(sorted(entries))} (run `stcorr models`).{hint}"
    )


def _with_stride(config: dict[str, Any], stride: int | None) -> dict[str, Any]:
    return {**config, "stride": stride} if stride is not None else dict(config)


def _build(config: dict[str, Any], state_dict: dict[str, torch.Tensor], source: str) -> CorrespondenceModel:
    try:
        model = CorrespondenceModel.from_config(config)
    except (InputError, TypeError) as exc:
        raise CheckpointError(f"invalid model config for {source}: {exc}") from exc
    load_state_dict_strict(model, state_dict)
    logger.info("loaded %s (%s, stride %d)", source, model.arch, model.stride)
    return model


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"cannot read model config {path}: {exc}; expected UTF-8 JSON as written by save_pretrained "
            "or `stcorr convert`"
        ) from exc
    if not isinstance(config, dict):
        raise CheckpointError(
            f"model config {path} holds a JSON {type(config).__name__}, expected an object such as "
            '{"arch": "resnet18", "stride": 8}; rewrite it with save_pretrained or `stcorr convert`'
        )
    return config


def _config_from_keys(state_dict: dict[str, torch.Tensor], stride: int | None, source: Path) -> dict[str, Any]:
    if stride is None:
        raise InputError(
            f"{source} carries no config, so its stride is unknown: pass stride=8 or stride=4 "
            "(for the authors' releases, the stride is in the file's name in the model zoo: *_d8 / *_d4), "
            "or use a manifest name, whose entry states the stride"
        )
    return {"arch": detect_arch(state_dict), "stride": stride, "input_space": "lab", "layers": ["layer3"]}


def _load_folder(folder: Path, stride: int | None) -> CorrespondenceModel:
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise WeightsUnavailableError(
            f"{folder} has no {WEIGHTS_NAME}; expected a folder written by save_pretrained or `stcorr convert`"
        )
    state_dict = read_safetensors(weights_path)
    config = _read_config(config_path) if config_path.is_file() else _config_from_keys(state_dict, stride, folder)
    return _build(_with_stride(config, stride), state_dict, str(folder))


def _load_path(path: Path, stride: int | None) -> CorrespondenceModel:
    if path.is_dir():
        return _load_folder(path, stride)
    if path.suffix == ".safetensors":
        state_dict = read_safetensors(path)
        sibling = path.parent / CONFIG_NAME
        config = _read_config(sibling) if sibling.is_file() else _config_from_keys(state_dict, stride, path)
        return _build(_with_stride(config, stride), state_dict, str(path))
    if path.suffix in PICKLE_SUFFIXES:
        return load_checkpoint(path, stride=stride)
    raise InputError(
        f"cannot load {path}: expected a folder, a .safetensors file or a checkpoint ({', '.join(PICKLE_SUFFIXES)})"
    )


def load_checkpoint(path: str | os.PathLike[str], *, stride: int | None) -> CorrespondenceModel:
    """Load an official release ``.pth`` (or a torchvision-keyed one) and convert it on the fly (CPU)."""
    path = Path(path)
    state_dict = torchvision_keys(read_pth(path))
    return _build(_config_from_keys(state_dict, stride, path), state_dict, str(path))


def _split_revision(repo: str) -> tuple[str, str | None]:
    repo_id, _, rev = repo.partition("@")
    return repo_id, rev or None


def _load_hub_repo(
    repo: str,
    revision: str | None,
    local_files_only: bool | None,
    cache_dir: str | os.PathLike[str] | None,
    stride: int | None,
) -> CorrespondenceModel:
    repo_id, pinned = _split_revision(repo)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise UnknownModelError(
            f"'{HF_PREFIX}{repo}' does not name a Hub repo: {str(exc).rstrip('.')}. Expected '{HF_PREFIX}org/repo' or "
            f"'{HF_PREFIX}org/repo@revision'"
        ) from exc
    rev = revision or pinned
    fetch = dict(revision=rev, cache_dir=cache_dir, local_files_only=local_files_only)
    config = _read_config(fetch_hub_file(repo_id, CONFIG_NAME, **fetch))
    state_dict = read_safetensors(fetch_hub_file(repo_id, WEIGHTS_NAME, **fetch))
    return _build(_with_stride(config, stride), state_dict, f"{HF_PREFIX}{repo_id}@{rev or 'main'}")


def _load_entry(
    entry: ManifestEntry,
    revision: str | None,
    local_files_only: bool | None,
    cache_dir: str | os.PathLike[str] | None,
    stride: int | None,
) -> CorrespondenceModel:
    config = _with_stride(entry.config, stride)
    if entry.kind == "hub":
        assert entry.hub is not None
        hub = entry.hub
        path = fetch_hub_file(
            hub.repo_id,
            hub.filename,
            revision=revision or hub.revision,
            sha256=None if revision else hub.sha256,
            size=None if revision else hub.size,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
        return _build(config, read_safetensors(path), entry.name)
    if entry.kind == "embedded":
        return _load_embedded(entry, config)
    return _load_release(entry, config)


def _load_embedded(entry: ManifestEntry, config: dict[str, Any]) -> CorrespondenceModel:
    folder = resources.files("stcorr").joinpath(entry.embedded_path or "")
    weights = Path(str(folder)) / WEIGHTS_NAME
    if not weights.is_file():
        raise WeightsUnavailableError(
            f"the embedded model {entry.name!r} is missing from the installed package ({weights}); reinstall stcorr"
        )
    verify_file(weights, sha256=entry.sha256, size=entry.size,
                fix_hint="The installed package is damaged: reinstall stcorr (pip install --force-reinstall stcorr)")
    return _build(config, read_safetensors(weights), entry.name)


def _load_embedded_default(stride: int | None) -> CorrespondenceModel:
    name = default_model_name()
    if name is None:
        raise WeightsUnavailableError(
            "this stcorr build ships no embedded default model yet, so load_model() needs a name: "
            f"one of {', '.join(sorted(load_manifest()))} (authors' releases, see `stcorr models`), "
            "'hf-hub:org/repo', or a local folder/checkpoint"
        )
    return _load_entry(load_manifest()[name], None, True, None, stride)


def _load_release(entry: ManifestEntry, config: dict[str, Any]) -> CorrespondenceModel:
    converted = release_dir(entry.name)
    if (converted / WEIGHTS_NAME).is_file():
        return _load_folder(converted, config["stride"])
    downloaded = stcorr_home() / f"{entry.name}.pth"
    if downloaded.is_file():
        verify_file(downloaded, sha256=entry.sha256, size=entry.size,
                    fix_hint=f"Download it again from {entry.release_url}")
        return load_checkpoint(downloaded, stride=config["stride"])
    raise WeightsUnavailableError(
        f"{entry.name!r} is one of the authors' released checkpoints ({entry.description}). It is hosted on "
        f"Google Drive, which stcorr does not download from:\n    {entry.release_url}\n"
        f"Download it, then either save it as {downloaded} or convert it once:\n"
        f"    python -m stcorr convert /path/to/downloaded.pth {converted} --stride {entry.stride}\n"
        f"after which load_model({entry.name!r}) works offline. "
        f"(STCORR_HOME moves {stcorr_home()}.)"
    )
