"""Reading weights files and converting the authors' released checkpoints to torchvision keys.

The official release (MMCV 1.3.18) stores the student under ``state_dict`` with a ``backbone.`` prefix
and MMCV ``ConvModule`` names; the teacher (``backbone_t.``), the ``iteration`` buffer, ``meta`` and the
optimiser state are dropped. Renaming rules (released -> torchvision):

===================================  =============================
``conv1.conv.weight``                ``conv1.weight``
``conv1.bn.X``                       ``bn1.X``
``layerL.B.convK.conv.weight``       ``layerL.B.convK.weight``
``layerL.B.convK.bn.X``              ``layerL.B.bnK.X``
``layerL.B.downsample.conv.weight``  ``layerL.B.downsample.0.weight``
``layerL.B.downsample.bn.X``         ``layerL.B.downsample.1.X``
===================================  =============================

Pickled checkpoints are read with ``torch.load(weights_only=True)``: no code is executed.
"""

from __future__ import annotations

import os
import pickle
import re
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from stcorr._atomic import atomic_path
from stcorr.errors import CheckpointError, OutputWriteError, WeightsUnavailableError

__all__ = [
    "read_pth",
    "require_regular_file",
    "read_safetensors",
    "write_safetensors",
    "official_to_torchvision",
    "torchvision_keys",
    "detect_arch",
    "load_state_dict_strict",
]

_MMCV_RULES = (
    (re.compile(r"^conv1\.conv\.weight$"), "conv1.weight"),
    (re.compile(r"^conv1\.bn\.(\w+)$"), r"bn1.\1"),
    (re.compile(r"^(layer\d+\.\d+)\.conv(\d)\.conv\.weight$"), r"\1.conv\2.weight"),
    (re.compile(r"^(layer\d+\.\d+)\.conv(\d)\.bn\.(\w+)$"), r"\1.bn\2.\3"),
    (re.compile(r"^(layer\d+\.\d+)\.downsample\.conv\.weight$"), r"\1.downsample.0.weight"),
    (re.compile(r"^(layer\d+\.\d+)\.downsample\.bn\.(\w+)$"), r"\1.downsample.1.\2"),
)


def require_regular_file(path: str | Path, what: str = "weights file") -> Path:
    """``path`` if it is a regular file (links followed); else :class:`CheckpointError` before anything opens it
    (opening a FIFO blocks until someone writes to it; a device never ends)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise WeightsUnavailableError(f"{what} {path} does not exist") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise CheckpointError(f"{what} {path} is {kind}, not a regular file; give the path of the weights file "
                              "itself (a .safetensors or .pth file, or a model folder)")
    return path


def _check_zip_crcs(path: Path) -> None:
    """torch.load does not check the CRC-32 that every record of a ``.pth`` zip carries; check them, so a
    damaged file is refused instead of loading changed numbers. Old (non-zip) pickles carry no checksum."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}; the file is damaged or truncated, download "
                              "or copy it again") from exc
    if damaged is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: record {damaged} fails its CRC-32 check; download "
                              "or copy it again")


def read_pth(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a pickled PyTorch checkpoint safely (tensors only) and return its flat state dict.

    Descends into a ``state_dict`` or ``model`` entry and strips a leading ``module.`` from keys. The zip's
    CRC-32 checksums are verified first (:class:`CheckpointError` for a damaged file); keys must be strings.
    """
    path = require_regular_file(path, "checkpoint")
    _check_zip_crcs(path)
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {exc}. Expected a PyTorch file holding tensors only "
            "(a state dict); truncated downloads and pickles with custom classes cannot be loaded safely"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
            break
    if not isinstance(data, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, expected a state dict")
    odd = [key for key in data if not isinstance(key, str)]
    if odd:
        raise CheckpointError(f"checkpoint {path} has keys that are not names ({', '.join(map(repr, odd[:5]))}); "
                              "expected a state dict mapping parameter names to tensors")
    return {_strip_prefix(key, "module."): value for key, value in data.items() if isinstance(value, torch.Tensor)}


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file into a CPU state dict, turning format errors into :class:`CheckpointError`."""
    path = require_regular_file(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read safetensors file {path}: {exc}; the file is corrupt or truncated") from exc


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write CPU copies of ``tensors`` to ``path`` atomically, byte-identical for identical tensors.

    The only metadata is ``{"format": "pt"}``: safetensors writes metadata keys in a varying order, so one
    key is what keeps the bytes (and the sha256) reproducible. A full disk raises :class:`OutputWriteError`.
    """
    contiguous = {key: value.detach().contiguous().cpu() for key, value in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(contiguous, str(tmp), metadata={"format": "pt"})
        except (SafetensorError, OSError) as exc:
            full = "StorageFull" in str(exc) or "No space" in str(exc) or getattr(exc, "errno", None) == 28
            reason = "the disk is full; free some space" if full else "check the folder"
            raise OutputWriteError(f"cannot write {path}: {exc}; {reason} and retry") from exc
    return Path(path)


def _strip_prefix(key: str, prefix: str) -> str:
    return key[len(prefix) :] if key.startswith(prefix) else key


def _rename_mmcv_key(key: str) -> str:
    for pattern, replacement in _MMCV_RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return key


def official_to_torchvision(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a released checkpoint's state dict to torchvision ResNet key names.

    Keeps only the student (``backbone.*``); drops ``backbone_t.*`` (teacher) and every other entry.
    A state dict that is already torchvision-keyed (no ``backbone.`` keys) is returned unchanged.
    """
    student = {key[len("backbone.") :]: value for key, value in state_dict.items() if key.startswith("backbone.")}
    if not student:
        return dict(state_dict)
    return {_rename_mmcv_key(key): value for key, value in student.items()}


def torchvision_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported layout (official MMCV or torchvision) -> torchvision keys, ``fc.*`` removed."""
    converted = official_to_torchvision(state_dict)
    return {key: value for key, value in converted.items() if not key.startswith("fc.")}


def detect_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """ResNet depth from a torchvision-keyed state dict: bottleneck blocks (``conv3``) mean resnet50,
    basic blocks (``conv1``/``conv2`` only) resnet18."""
    blocks = [key for key in state_dict if re.match(r"^layer\d+\.\d+\.conv\d\.weight$", key)]
    if any(key.endswith("conv3.weight") for key in blocks):
        return "resnet50"
    if blocks:
        return "resnet18"
    raise CheckpointError(
        "cannot tell the ResNet depth: no ResNet block keys (layerL.B.convK.weight) found; expected a "
        "ResNet-18 or ResNet-50 state dict in the torchvision or the official MMCV layout"
    )


def _kind(dtype: torch.dtype) -> str:
    """float, int, bool or complex: weights may change precision (float16 -> float32), never kind."""
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "int"


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load torchvision-keyed weights; stages the model does not build (e.g. layer4) are ignored.

    Any other missing or unexpected key, a shape mismatch, or a tensor of another kind of number than the
    model's (int64, bool or complex weights for float parameters) raises :class:`CheckpointError` listing them.
    """
    expected = model.state_dict()
    built_stages = {key.split(".")[0] for key in expected}
    unbuilt = {key for key in state_dict if re.match(r"^layer\d\.", key) and key.split(".")[0] not in built_stages}
    usable = {key: value for key, value in state_dict.items() if key not in unbuilt}
    missing = sorted(set(expected) - set(usable))
    unexpected = sorted(set(usable) - set(expected))
    mismatched = sorted(
        f"{key}: checkpoint {tuple(usable[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(usable) & set(expected)
        if usable[key].shape != expected[key].shape
    )
    wrong_kind = sorted(
        f"{key}: {usable[key].dtype} where the model has {expected[key].dtype}"
        for key in set(usable) & set(expected)
        if _kind(usable[key].dtype) != _kind(expected[key].dtype)
    )
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", mismatched), ("wrong number types", wrong_kind))
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"weights do not match {getattr(model, 'arch', type(model).__name__)}: " + "; ".join(problems)
            + ". Check the architecture (resnet18/resnet50) and that the file is an stcorr, torchvision "
            "or official Spa-then-Temp checkpoint"
        )
    model.load_state_dict(usable, strict=True)
