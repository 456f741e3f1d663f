"""Ctrl-C and SIGTERM as one exception, and sections of work they never cut in half.

The command lines install :func:`handled_interrupts`: SIGINT and SIGTERM then raise :class:`Interrupted`
(a ``KeyboardInterrupt``), so every ``finally`` and ``except BaseException`` runs and temporary files are
removed. Inside :func:`uninterrupted` (e.g. writing a frame's mask *and* its confidence map) a signal is held
back and raised when the section ends, so per-frame outputs come complete. Without the handlers installed
(library use), :func:`uninterrupted` changes nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Interrupted", "handled_interrupts", "uninterrupted"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"depth": 0, "pending": 0}


class Interrupted(KeyboardInterrupt):
    """Raised by SIGINT (Ctrl-C) or SIGTERM while :func:`handled_interrupts` is active."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + self.signum


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state["depth"] > 0:
        _state["pending"] = _state["pending"] or signum
        return
    raise Interrupted(signum)


@contextmanager
def handled_interrupts() -> Iterator[None]:
    """While active (main thread only; elsewhere it does nothing), SIGINT and SIGTERM raise :class:`Interrupted`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handler) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state["pending"] = 0


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM (when :func:`handled_interrupts` is active) until the block ends."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0 and _state["pending"]:
            signum, _state["pending"] = _state["pending"], 0
            raise Interrupted(signum)
