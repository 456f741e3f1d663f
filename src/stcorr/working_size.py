"""The working size: the longest side frames are encoded at, one default for the CLI, the app and the Python API.

On CPU frames are processed at most :data:`CPU_MAX_SIDE` px on their longest side (a 768x576 clip runs about
1.4x smaller, i.e. about 2x faster); on accelerators at full size. Results always come back at the frames'
original size. No torch here, so the command line's ``--help`` can state the default without importing it.
"""

from __future__ import annotations

import numbers

from stcorr.errors import InputError

__all__ = ["CPU_MAX_SIDE", "default_max_side", "working_max_side"]

CPU_MAX_SIDE = 640  # default working size on CPU: longest side in pixels (outputs keep the input's size)


def default_max_side(device_type: str) -> int | None:
    """The working size when none is given: :data:`CPU_MAX_SIDE` on CPU, ``None`` (full size) on accelerators."""
    return CPU_MAX_SIDE if device_type == "cpu" else None


def working_max_side(max_side: int | None, device_type: str, *, name: str = "max_side") -> int | None:
    """The longest side to work at: ``max_side`` as given (0 = full size, returned as ``None``), or when it is
    ``None`` the device's default (:func:`default_max_side`). A negative or non-integer value is an
    :class:`~stcorr.errors.InputError` naming the argument ``name``."""
    if max_side is None:
        return default_max_side(device_type)
    if isinstance(max_side, bool) or not isinstance(max_side, numbers.Integral) or max_side < 0:
        raise InputError(
            f"{name} must be a positive number of pixels or 0 (full resolution), got {max_side!r}"
        )
    return int(max_side) or None
