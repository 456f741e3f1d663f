"""Atomic file writes: write to a temporary file in the destination folder, then rename."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stcorr.errors import OutputWriteError

__all__ = ["atomic_path"]


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Files get the usual permissions, 0666 & ~umask, whatever the writer did to the temporary file.
_FILE_MODE = 0o666 & ~_current_umask()


def _create_temp(destination: Path) -> Path:
    """Create an empty hidden file beside ``destination``."""
    while True:
        tmp = destination.parent / f".{destination.name}.{secrets.token_hex(6)}.tmp{destination.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_path(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it over ``destination`` on success.

    On any exception the temporary file is removed and ``destination`` is left untouched. Missing
    parent folders are created; a folder that cannot be written raises :class:`OutputWriteError`.
    """
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(destination)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {destination}: {exc.strerror or exc}; choose a writable folder") from exc
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
