"""Keep freed memory in the process instead of returning it to the OS after every frame.

glibc's ``malloc`` serves large blocks with ``mmap`` and returns them with ``munmap`` when freed, and trims
the heap top once more than 128 KiB is free. A video job allocates and frees the same large buffers every
frame (encoder activations of tens of MiB), so each frame faults all those pages in again: about 57,000
minor page faults per 640x480 frame with the default model, measured with ``resource.getrusage``
(``benchmarks/avx2.py``). :func:`keep_freed_memory` raises both thresholds so that freed blocks are reused.
It changes process-wide allocator settings, so the library never calls it by itself; the command line does
(before ``propagate`` and ``points``). Peak memory is unchanged; memory freed stays reserved by the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["keep_freed_memory", "restore_malloc_defaults"]

_log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); blocks above it stay mmapped.
_MMAP_THRESHOLD = 32 * 2**20
_TRIM_THRESHOLD = 2**30
_DEFAULT_THRESHOLD = 128 * 2**10


def _mallopt(pairs: tuple[tuple[int, int], ...]) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    return all(mallopt(param, value) == 1 for param, value in pairs)


def keep_freed_memory() -> bool:
    """Let glibc reuse freed blocks up to 32 MiB and keep up to 1 GiB of free heap; True if applied.

    Does nothing (returns False) where the C library is not glibc.
    """
    applied = _mallopt(((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)))
    _log.debug("malloc thresholds raised: %s", applied)
    return applied


def restore_malloc_defaults() -> bool:
    """glibc's default thresholds (128 KiB; the dynamic mmap threshold is not restored); True if applied."""
    return _mallopt(((_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD), (_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD)))
