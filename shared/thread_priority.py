"""Background work at a lower CPU priority than the live path: the one place ClassPulse renices a thread.

On Linux the nice value belongs to each thread, and threads a thread starts (a native library's
worker pool, for one) inherit it; :func:`lower_this_thread` raises the calling thread's value so
that, on a busy box, the scheduler serves scoring first and this work takes what is left. Elsewhere
(or where the call is refused) nothing changes and ``None`` comes back: the work then runs at the
process's own priority, as before.
"""

from __future__ import annotations

import os
import sys
import threading


def lower_this_thread(by: int) -> int | None:
    """Make the calling thread ``by`` steps nicer (capped at 19); its nice value after, or None when unchanged."""
    if by <= 0 or not sys.platform.startswith("linux"):
        return None
    tid = threading.get_native_id()
    try:
        value = min(19, os.getpriority(os.PRIO_PROCESS, tid) + by)
        os.setpriority(os.PRIO_PROCESS, tid, value)
    except OSError:
        return None
    return value


def thread_nice(native_id: int | None = None) -> int:
    """The nice value of a thread of this process (default: the calling one)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id() if native_id is None else native_id)
