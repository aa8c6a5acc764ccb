"""glibc's malloc arenas: how many a process may create (``mallopt(M_ARENA_MAX)``).

glibc gives threads that allocate at the same time their own arenas (up to 8 per core); memory
freed in one arena is not reused by the others, so a process whose threads each load models
(replay: decoding, the face thread, mediapipe's graph threads, Whisper's loader) holds more at its
peak. Limiting the arenas is what ``MALLOC_ARENA_MAX`` does, from inside the process; threads made
before the call keep their arenas. Elsewhere than glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_ARENA_MAX = -8
"""``mallopt`` parameter number of M_ARENA_MAX in glibc's malloc.h."""


def limit_malloc_arenas(n: int) -> bool:
    """Let the process use at most ``n`` malloc arenas from now on; True when glibc took it (0: leave as is)."""
    if n <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, n))
