"""Atomic file writes: write to a temporary file in the destination folder, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stcorr.errors import OutputWriteError

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it over ``destination`` on success.

    On any exception the temporary file is removed and ``destination`` is left untouched. Missing
    parent folders are created; a folder that cannot be written raises :class:`OutputWriteError`.
    """
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=f".tmp{destination.suffix}", dir=destination.parent)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {destination}: {exc.strerror or exc}; choose a writable folder") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
