"""wait_event: a loop waiting on an event stops on the first cancel, even one that lands as the event is set."""

from __future__ import annotations

import asyncio

import pytest

from shared.aio_wait import wait_event

pytestmark = pytest.mark.unit


async def test_a_cancel_that_lands_as_the_event_is_set_stops_the_loop() -> None:
    event = asyncio.Event()

    async def loop() -> None:  # the shape of the delivery, worker and snapshot loops
        while True:
            await wait_event(event, 10.0)
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    event.set()
    task.cancel()  # the same loop iteration: asyncio.wait_for(event.wait(), 10) on 3.11 lost this cancel
    done, _ = await asyncio.wait({task}, timeout=1.0)
    assert done and task.cancelled()


async def test_it_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 0.01) is True
    assert await wait_event(event, None) is True
