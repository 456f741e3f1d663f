"""Output folders a job may write: kept apart from its inputs, one run at a time, never mixing runs.

- :func:`check_apart`: an output that is an input, or an output folder that holds an input (the frames,
  the mask, ...), or an image written straight into the frames folder, is refused before anything is touched.
- :func:`output_lock`: an exclusive lock (``fcntl.flock`` on ``FOLDER/.stcorr.lock``) held for the whole run,
  so a second run into the same folder fails at once instead of mixing its files with the first one's.
- :func:`claim_png_folder`: a folder of per-frame PNGs that holds an earlier run's PNGs is refused, or emptied
  with ``overwrite``; temporary files of killed runs are removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from stcorr._atomic import remove_stale_temps
from stcorr.errors import OutputWriteError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not serialised there
    fcntl = None  # type: ignore[assignment]

__all__ = ["check_apart", "output_lock", "claim_png_folder", "LOCK_NAME"]

PathLike = str | os.PathLike[str]
LOCK_NAME = ".stcorr.lock"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _same(first: Path, second: Path) -> bool:
    if first == second:
        return True
    try:
        return os.path.samefile(first, second)  # hard links, bind mounts
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    return folder in path.parents


def check_apart(inputs: Iterable[PathLike | None], *, folders: Mapping[str, PathLike | None] = {},
                files: Mapping[str, PathLike | None] = {}) -> None:
    """Refuse outputs that would destroy or change an input, before any output is created or deleted.

    ``folders`` and ``files`` map an option's name (for the message) to the output folder or file it names;
    ``inputs`` are the paths read (a frames folder, a video, a mask file; None entries are skipped). An output
    folder may not be an input nor contain one; an output file may not be an input, and an image file may not
    land in a frames folder (it would become a frame); no two outputs may share a path. Links are followed.
    Raises :class:`OutputWriteError`.
    """
    sources = [(os.fspath(item), _real(item)) for item in inputs if item is not None]
    outputs = [(name, path, True) for name, path in folders.items() if path is not None]
    outputs += [(name, path, False) for name, path in files.items() if path is not None]
    for index, (name, given, _) in enumerate(outputs):
        for other, other_given, _ in outputs[:index]:
            if _same(_real(given), _real(other_given)):
                raise OutputWriteError(f"{name} {given} is also {other}; one would overwrite the other. "
                                       "Give each output its own path")
    for name, given, is_folder in outputs:
        out = _real(given)
        for shown, source in sources:
            if _same(out, source):
                problem = f"is the input {shown}"
            elif is_folder and _inside(source, out):
                problem = f"holds the input {shown}"
            elif (not is_folder and source.is_dir() and out.parent == source
                  and out.suffix.lower() in _IMAGE_SUFFIXES):
                problem = f"would put an image into the frames folder {shown}"
            else:
                continue
            raise OutputWriteError(
                f"{name} {given} {problem}; writing there would overwrite or delete what this run reads. "
                "Choose an output path outside the inputs"
            )


@contextmanager
def output_lock(folder: PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the block; yield the folder.

    Another process holding it raises :class:`OutputWriteError` at once (no waiting). The lock file
    ``.stcorr.lock`` stays in the folder (removing it would race with a run about to lock it); the lock itself
    ends with the block or the process, even a killed one.
    """
    folder = Path(folder)
    lock_path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OutputWriteError(f"cannot write into {folder}: {exc.strerror or exc}; choose a writable folder") from exc
    try:
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "?"
                raise OutputWriteError(
                    f"another stcorr run (pid {holder}) is writing into {folder}; runs into one folder would mix "
                    "their files. Wait until it ends, or choose another output folder"
                ) from None
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(descriptor)  # also releases the lock


def claim_png_folder(folder: PathLike, overwrite: bool) -> None:
    """A folder of per-frame PNGs must not mix runs: refuse one holding PNGs, or with ``overwrite`` empty it.

    Hidden temporary files that killed runs left in the folder are removed either way.
    """
    folder = Path(folder)
    remove_stale_temps(folder)
    earlier = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if earlier and not overwrite:
        raise OutputWriteError(
            f"{folder} already holds {len(earlier)} PNGs from an earlier run, which would mix with this run's; "
            "pass --overwrite (overwrite=True) to delete them first, or choose another output folder"
        )
    for path in earlier:
        path.unlink()
