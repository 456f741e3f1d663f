"""Where stcorr keeps files on disk (no heavy imports: the command line's ``models`` uses it)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["stcorr_home", "release_dir"]


def stcorr_home() -> Path:
    """Folder for converted release checkpoints: ``$STCORR_HOME``, default ``~/.cache/stcorr``."""
    return Path(os.environ.get("STCORR_HOME", Path.home() / ".cache" / "stcorr")).expanduser()


def release_dir(name: str) -> Path:
    """Where ``load_model(name)`` looks for a converted release checkpoint."""
    return stcorr_home() / name
