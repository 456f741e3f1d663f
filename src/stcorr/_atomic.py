"""Atomic writes: nothing half-written is ever left under the destination's name.

- :func:`atomic_path`: one file, written to a hidden temporary file beside it, then renamed over it
  (:func:`write_atomic` wraps it for a writer callback and turns ``OSError`` into ``OutputWriteError``).
- :func:`replace_folder`: a whole folder, written as a hidden sibling, then swapped in for the old one.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from stcorr.errors import OutputWriteError, StcorrError

__all__ = ["atomic_path", "write_atomic", "write_error", "replace_folder", "remove_stale_temps", "FOLDER_HINT"]


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Files and folders get the usual permissions (0666 / 0777 & ~umask), whatever the writer did to the temporary.
_UMASK = _current_umask()
_FILE_MODE = 0o666 & ~_UMASK
_FOLDER_MODE = 0o777 & ~_UMASK


def _create_temp(destination: Path) -> Path:
    """Create an empty hidden file beside ``destination``, named ``.NAME.<token>.<pid>.tmp<suffix>``."""
    while True:
        tmp = destination.parent / f".{destination.name}.{secrets.token_hex(6)}.{os.getpid()}.tmp{destination.suffix}"
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


# ``.NAME.<12 hex>.<pid>.tmp<suffix>``; stcorr 0.1.0 wrote ``.NAME.<12 hex>.tmp<suffix>`` (no pid)
_TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{12}(?:\.(?P<pid>\d+))?\.tmp(?:\.[^./]*)?$")


def remove_stale_temps(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` that a killed process left in ``folder`` (only those of
    destination ``name`` if given): a file whose pid is no longer running, or one of stcorr 0.1.0 (no pid).
    Returns what was deleted; an unreadable folder deletes nothing."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = _TEMP_PATTERN.match(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        pid = match["pid"]
        if pid is not None and (int(pid) == os.getpid() or _process_alive(int(pid))):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


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


# ------------------------------------------------------------------------------------------- folders

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic rename (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the system or the file system cannot do it; other failures raise ``OSError``.
    """
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(first), None, os.fspath(second))


def _sibling_pattern(destination: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(destination.name)}\.[A-Za-z0-9_]+\.(\d+)\.(staged|old)$")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale_siblings(destination: Path) -> None:
    """Delete staging/old folders of ``destination`` left by a killed process (its pid is in the name)."""
    pattern = _sibling_pattern(destination)
    for entry in destination.parent.iterdir():
        match = pattern.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _process_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` and the folder itself to disk before it is swapped in."""
    for path in folder.rglob("*"):
        if path.is_file():
            _fsync(path)
    _fsync(folder)


def _swap_in(staged: Path, destination: Path) -> None:
    """Put ``staged`` at ``destination``; the old folder stays complete under one of the two names throughout."""
    if not destination.exists():
        os.rename(staged, destination)
    elif _exchange(staged, destination):
        shutil.rmtree(staged, ignore_errors=True)  # now the old folder
    else:
        aside = destination.with_name(f".{destination.name}.{secrets.token_hex(6)}.{os.getpid()}.old")
        os.rename(destination, aside)
        try:
            os.rename(staged, destination)
        except OSError:
            os.rename(aside, destination)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    _fsync(destination.parent)


@contextmanager
def replace_folder(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``destination``; on success it replaces ``destination`` whole.

    The old folder stays in place, complete, until the new one is complete and flushed to disk; then the two
    are swapped in one atomic rename (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere the old folder is first
    renamed aside to ``.NAME.*.old``, so a crash in that instant leaves it complete there) and the old one is
    deleted. A ``destination`` that is a symbolic link replaces the folder it points to (the link stays). On any
    exception the staging folder is removed and ``destination`` is untouched. Staging folders
    of killed processes (``.NAME.*.PID.staged``) are deleted by the next call. A ``destination`` that is a
    file, or a parent that cannot be written, raises :class:`OutputWriteError`.
    """
    destination = Path(destination)
    if destination.is_symlink():  # replace the folder the link points to; the link itself stays
        destination = Path(os.path.realpath(destination))
    if destination.exists() and not destination.is_dir():
        raise OutputWriteError(f"{destination} is a file, expected a folder (or a path that does not exist yet); "
                               "choose another output folder or delete the file")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_siblings(destination)
        staged = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=f".{os.getpid()}.staged",
                                       dir=destination.parent))
        os.chmod(staged, _FOLDER_MODE)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {destination}: {exc.strerror or exc}; choose a writable folder") from exc
    try:
        yield staged
        try:
            _sync_tree(staged)
            _swap_in(staged, destination)
        except OSError as exc:
            raise OutputWriteError(f"cannot replace {destination}: {exc.strerror or exc}; it is unchanged") from exc
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
