"""Shared argument and tensor checks (no stcorr imports beyond errors).

Small helpers in kornia's style: each one validates one property of an argument and raises
:class:`~stcorr.errors.InputError` saying what was expected and what was given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from stcorr.errors import InputError

__all__ = ["describe", "to_numpy", "check_unit_range", "check_type"]


def to_numpy(x: Any) -> np.ndarray:
    """A tensor (any device but meta, which holds no data: :class:`InputError`), array or array-like as a NumPy
    array."""
    if isinstance(x, torch.Tensor):
        if x.is_meta:
            raise InputError(f"got a {describe(x)} on the meta device, which holds no data; pass a tensor with "
                             "values (CPU or CUDA)")
        return x.detach().cpu().numpy()
    return np.asarray(x)


def describe(x: Any) -> str:
    """What an argument is, for error messages: type, and shape and dtype for arrays and tensors."""
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def check_unit_range(array: np.ndarray, what: str) -> None:
    """Raise unless every value of ``array`` lies in [0, 1] (NaN fails too)."""
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if not (0.0 <= low and high <= 1.0):  # also false for NaN
        raise InputError(f"expected {what} with values in [0, 1], got values in [{low}, {high}]; clip or rescale it")


def check_type(value: Any, types: type | tuple[type, ...], what: str, expected: str) -> None:
    """Raise unless ``value`` is an instance of ``types``; ``expected`` says in words what is accepted."""
    if not isinstance(value, types):
        raise InputError(f"{what} must be {expected}, got {describe(value)}")
