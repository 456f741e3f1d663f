"""Atomic file writes: write to a temporary file in the destination folder, then rename."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from stcorr.errors import OutputWriteError, StcorrError

__all__ = ["atomic_path", "write_atomic", "write_error", "FOLDER_HINT"]


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


FOLDER_HINT = "check that its folder is a writable directory (not a file) and that the disk is not full"


def write_error(path: Path, exc: BaseException, hint: str = FOLDER_HINT) -> OutputWriteError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return OutputWriteError(f"cannot write {path}: {reason}; {hint}")


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, then rename the result onto ``path``; return ``path``.

    Built on the project's single temp-file helper, :func:`stcorr._atomic.atomic_path`: if ``write``
    raises, the temporary file is removed and ``path`` is untouched. Any ``OSError`` (from ``write``
    or from the final rename) becomes an :class:`OutputWriteError` naming ``path``.
    """
    final = Path(path)
    try:
        with atomic_path(final) as tmp:
            write(tmp)
    except OSError as exc:
        if isinstance(exc, StcorrError):
            raise
        raise write_error(final, exc) from exc
    return final


