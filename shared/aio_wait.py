"""Waiting for an event with a timeout, without losing a cancellation.

On Python 3.11 ``asyncio.wait_for(event.wait(), t)`` swallows a cancellation that arrives as the
wait finishes (the event set, or the timeout firing, in the same loop iteration: CPython
gh-86296, fixed in 3.12 by building ``wait_for`` on ``asyncio.timeout``). A loop around it then
goes on as if nothing happened and its task never stops on the first cancel: seen in the fault
tier, where the gateway's webhook delivery loop (a 0.5 s poll) outlived its SIGTERM until the
stop timeout cancelled it again, 17 s later. ``asyncio.timeout`` tells its own expiry apart from
an outside cancellation, so :func:`wait_event` never loses one.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passed (None: no limit); whether it is set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()
