"""A propagation session on disk: its JSON file, and its masks written as indexed PNGs.

The JSON is the session's own ``to_dict()`` (:class:`stcorr.PropagationSession`: anchors, options, working
size, the model's configuration) plus ``"model_name"`` (the name or path the model was loaded from),
``"video"`` (where the frames came from, as a hint) and ``"max_frames"`` (the first N frames were used).
Replaying it (``stcorr propagate --session FILE``) rebuilds the session with
:meth:`~stcorr.PropagationSession.from_dict` and propagates every frame, giving the same masks as the session
that was saved.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stcorr._atomic import atomic_path
from stcorr.errors import InputError
from stcorr.io.masks import write_mask_png
from stcorr.pipelines import claim_png_folder
from stcorr.propagation.session import PropagationSession

__all__ = ["session_to_json", "read_session_file", "write_session_file", "complete", "write_session_masks"]


def session_to_json(session: PropagationSession, *, model: str | None, video: str | None,
                    max_frames: int | None = None) -> dict[str, Any]:
    """The session's ``to_dict()`` with the model's name, the video and its frame limit recorded beside it."""
    return {**session.to_dict(), "model_name": model, "video": video, "max_frames": max_frames}


def write_session_file(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write a session dictionary as JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    return Path(path)


def read_session_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a session JSON written by the app (or :func:`write_session_file`), checked completely
    (:meth:`~stcorr.PropagationSession.check_dict`) before anything is built from it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the session file {path}: {exc}; "
                         "expected the session.json the app exports") from exc
    except RecursionError:  # JSON nested thousands of levels deep
        raise InputError(f"cannot read the session file {path}: it is nested too deeply to be a session; "
                         "expected the session.json the app exports") from None
    if not isinstance(data, dict) or not {"anchors", "options", "format"} <= set(data):
        raise InputError(f"{path} is not a stcorr session (expected a JSON object with \"format\", \"options\" "
                         "and \"anchors\", as PropagationSession.to_dict writes); export one from `stcorr app`")
    try:
        PropagationSession.check_dict(data)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return data


def complete(session: PropagationSession) -> Iterator[Any]:
    """Propagate every stale frame of the session; yields each new result."""
    yield from session.propagate()
    if session.stale_frames():
        raise InputError(f"frames {session.stale_frames()[:5]} are still not propagated; add a mask on some frame")


def write_session_masks(session: PropagationSession, masks_dir: str | os.PathLike[str],
                        progress: Callable[[int], None] | None = None, *, overwrite: bool = False) -> Path:
    """Propagate what is stale, then write every frame's mask as ``masks_dir/<frame name>.png``.

    Like :func:`stcorr.pipelines.propagate_video_mask`, a ``masks_dir`` already holding PNGs raises
    :class:`~stcorr.errors.OutputWriteError` before any work unless ``overwrite=True`` (which deletes them).
    """
    claim_png_folder(Path(masks_dir), overwrite)
    for _ in complete(session):
        if progress:
            progress(1)
    names = session.frame_names
    for t in range(session.num_frames):
        write_mask_png(Path(masks_dir) / f"{names[t]}.png", session.result(t).labels)
    return Path(masks_dir)
