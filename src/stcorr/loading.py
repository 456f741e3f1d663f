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

from stcorr.checkpoint import detect_arch, load_state_dict_strict, read_pth, read_safetensors, torchvision_keys
from stcorr.errors import CheckpointError, InputError, UnknownModelError, WeightsUnavailableError
from stcorr.hub import fetch_hub_file, verify_file
from stcorr.manifest import ManifestEntry, default_model_name, load_manifest
from stcorr.model import CONFIG_NAME, WEIGHTS_NAME, CorrespondenceModel
from stcorr.paths import release_dir, stcorr_home

__all__ = ["load_model", "load_encoder", "resolve_device", "stcorr_home", "release_dir"]

logger = logging.getLogger(__name__)

HF_PREFIX = "hf-hub:"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; anything else as given."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
        name_or_path: which weights to load:

            - ``None``: the embedded default model shipped inside the package (offline);
            - a manifest name such as ``"stt-r18-s8"`` (``stcorr models`` lists them): its pinned Hub file, or
              the authors' release checkpoint once downloaded to ``$STCORR_HOME`` (default ``~/.cache/stcorr``);
            - ``"hf-hub:org/repo"`` or ``"hf-hub:org/repo@revision"``: a Hub repo holding ``config.json`` and
              ``model.safetensors`` (what :meth:`CorrespondenceModel.push_to_hub` publishes);
            - a folder with ``config.json`` + ``model.safetensors`` (``save_pretrained`` output, a training run);
            - a ``.safetensors`` file (config from a sibling ``config.json``, else inferred from the keys and
              ``stride``);
            - a ``.pth`` / ``.pt`` checkpoint: the authors' release (MMCV keys) or torchvision keys, read with
              ``torch.load(weights_only=True)``; needs ``stride``.

            Baselines (``"lab-pixels"``, ``"random-r18"``, ``"efficientnet-lite0"``) load with
            :func:`load_encoder`, not here.
        device: target device.
        revision: Hub revision overriding a manifest pin or an ``@revision`` suffix.
        local_files_only: never use the network; ``None`` follows ``HF_HUB_OFFLINE``.
        cache_dir: Hugging Face cache folder (default: the Hub's own).
        stride: 8 or 4. Required for checkpoints without a config (``.pth``, bare ``.safetensors``);
            overrides the stride of any other source (the weights are stride-agnostic).

    Returns:
        a :class:`~stcorr.model.CorrespondenceModel` in eval mode.

    Raises:
        UnknownModelError: a name that is neither in the manifest nor an existing path.
        WeightsUnavailableError: the weights are not on disk and may not (or cannot) be downloaded; the
            message gives the download command.
        ChecksumError: a downloaded file's sha256 or size differs from the manifest's pin.
        CheckpointError: the file cannot be read, or its keys do not match the architecture (listed).

    Example:
        >>> model = load_model()                      # doctest: +SKIP
        >>> model = load_model("runs/my-run", device="cpu")  # doctest: +SKIP
    """
    model = _load_cpu(
        name_or_path, revision=revision, local_files_only=local_files_only, cache_dir=cache_dir, stride=stride
    )
    return model.to(resolve_device(device)).eval()


def load_encoder(name_or_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> torch.nn.Module:
    """Any encoder the command line's ``--model`` accepts: a baseline by name, else :func:`load_model`.

    Args:
        name_or_path: a baseline name (``"lab-pixels"``, ``"random-r18"``, ``"efficientnet-lite0"``; see
            :mod:`stcorr.baseline_catalog`), or anything :func:`load_model` accepts (``None``: the default model).
        **kwargs: passed to :func:`load_model`; for a baseline only ``device`` is used.

    Returns:
        an ``nn.Module`` in eval mode with ``stride`` and ``feature_dim`` (the encoder protocol of
        :class:`~stcorr.model.CorrespondenceModel`).
    """
    from stcorr.baseline_catalog import BASELINE_DESCRIPTIONS

    if isinstance(name_or_path, str) and name_or_path in BASELINE_DESCRIPTIONS:
        from stcorr.baselines import load_baseline

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
    spec = os.fspath(name_or_path)
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
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read model config {path}: {exc}") from exc


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
    verify_file(weights, sha256=entry.sha256, size=entry.size, check_hash=False)
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
        return load_checkpoint(downloaded, stride=config["stride"])
    raise WeightsUnavailableError(
        f"{entry.name!r} is one of the authors' released checkpoints ({entry.description}). It is hosted on "
        f"Google Drive, which stcorr does not download from:\n    {entry.release_url}\n"
        f"Download it, then either save it as {downloaded} or convert it once:\n"
        f"    python -m stcorr convert /path/to/downloaded.pth {converted} --stride {entry.stride}\n"
        f"after which load_model({entry.name!r}) works offline. "
        f"(STCORR_HOME moves {stcorr_home()}.)"
    )
