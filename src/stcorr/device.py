"""Device resolution: the one place that picks CUDA or CPU (library, training and evaluation use it)."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None, *, local_rank: int | None = None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; anything else as given.

    With ``local_rank`` (one process per GPU under torchrun), ``None`` and a bare ``"cuda"`` become
    ``cuda:<local_rank mod device count>``; an explicit index is kept.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(device)
    if chosen.type == "cuda" and chosen.index is None and local_rank is not None:
        chosen = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return chosen
