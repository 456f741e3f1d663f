"""Device resolution: the one place that picks CUDA or CPU (library, training and evaluation use it)."""

from __future__ import annotations

import torch

from stcorr.errors import DeviceError

__all__ = ["resolve_device", "available_devices"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def available_devices() -> list[str]:
    """The devices this machine can run on: ``cpu``, then ``cuda:0``, ``cuda:1``, ... and ``mps`` if present."""
    devices = ["cpu"] + [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return devices + (["mps"] if _mps_available() else [])


def _device_count(kind: str) -> int:
    if kind == "cpu":
        return 1
    if kind == "cuda":
        return torch.cuda.device_count()
    if kind == "mps":
        return int(_mps_available())
    return 0


def resolve_device(device: str | torch.device | None, *, local_rank: int | None = None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; anything else is checked against this machine.

    With ``local_rank`` (one process per GPU under torchrun), ``None`` and a bare ``"cuda"`` become
    ``cuda:<local_rank mod device count>``; an explicit index is kept.

    Raises:
        DeviceError: ``device`` is not a torch device name, or this machine has no such device; the
            message lists :func:`available_devices`.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise DeviceError(
            f"{device!r} is not a device name; this machine has: {', '.join(available_devices())}"
        ) from exc
    count = _device_count(chosen.type)
    if chosen.type == "cuda" and chosen.index is None and local_rank is not None:
        chosen = torch.device("cuda", local_rank % max(count, 1))
    if count == 0 or (chosen.index is not None and chosen.index >= count):
        raise DeviceError(
            f"there is no {str(chosen)!r} device on this machine; it has: {', '.join(available_devices())}"
        )
    return chosen
