"""The aggregator's stall watchdog (``CLASSPULSE_AGGREGATOR_STALL_S``) on virtual time, and its wiring:
records waiting without progress -> unhealthy, then one error line and the supervised give-up (exit 3)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.aggregator.service import _watch_faust
from services.aggregator.settings import AggregatorSettings
from services.aggregator.stall import StallWatchdog, Waiting
from shared.metrics import Metrics
from shared.service import ServiceContext
from shared.settings import CommonSettings

pytestmark = pytest.mark.unit

STUCK = Waiting(records=12, lag=30)
IDLE = Waiting()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_waiting_records_without_progress_degrade_then_stall_with_one_readable_line() -> None:
    clock = Clock()
    dog = StallWatchdog(stall_s=60.0, clock=clock)
    assert dog.check(STUCK) == (False, None)  # work waits from now on
    clock.now += 4.9
    assert dog.check(STUCK) == (False, None)
    clock.now += 0.2
    assert dog.check(STUCK) == (True, None)  # unhealthy after 5 s
    clock.now += 54.8
    assert dog.check(STUCK) == (True, None)
    clock.now += 0.2
    degraded, message = dog.check(STUCK)
    assert degraded and message == (
        "aggregator stalled: 12 records taken and 30 waiting on the brokers, but no batch closed and no window "
        "emitted for 60 s (CLASSPULSE_AGGREGATOR_STALL_S=60); exiting so the orchestrator restarts it"
    )


def test_progress_resets_the_clock() -> None:
    clock = Clock()
    dog = StallWatchdog(stall_s=10.0, clock=clock)
    for _ in range(20):  # a busy worker: records always waiting, a batch closed every 3 s
        dog.check(STUCK)
        clock.now += 3.0
        assert dog.check(STUCK) == (False, None)
        dog.progressed()
    clock.now += 9.0
    assert dog.check(STUCK)[1] is None
    clock.now += 1.0
    assert dog.check(STUCK)[1] is not None


def test_an_idle_worker_never_stalls_and_waiting_counts_from_when_work_arrived() -> None:
    clock = Clock()
    dog = StallWatchdog(stall_s=10.0, clock=clock)
    for _ in range(100):  # an hour without input (and without progress): not a stall
        clock.now += 36.0
        assert dog.check(IDLE) == (False, None)
    assert dog.check(Waiting(lag=1)) == (False, None)  # records arrive after the long quiet time
    clock.now += 9.9
    assert dog.check(Waiting(records=1)) == (True, None)
    clock.now += 0.1
    assert dog.check(Waiting(records=1))[1] is not None
    assert dog.check(IDLE) == (False, None)  # drained (a rebalance dropped them): waiting starts again
    clock.now += 5.0
    assert dog.check(STUCK) == (False, None)


def test_a_short_bound_degrades_no_later_than_it_stalls() -> None:
    clock = Clock()
    dog = StallWatchdog(stall_s=2.0, clock=clock)
    dog.check(STUCK)
    clock.now += 2.0
    assert dog.check(STUCK)[0] and dog.check(STUCK)[1] is not None
    with pytest.raises(ValueError):
        StallWatchdog(stall_s=0.0)


@dataclass
class FakeWorker:
    started: bool = True
    crash_reason: BaseException | None = None


@dataclass
class FakeApp:
    progress: int = 0
    pending: Waiting = field(default_factory=Waiting)

    def waiting(self) -> Waiting:
        return self.pending


def _context() -> ServiceContext:
    from prometheus_client import CollectorRegistry

    return ServiceContext(name="aggregator", common=CommonSettings(), metrics=Metrics(CollectorRegistry()))


async def test_the_watch_reports_health_and_gives_up_on_a_stall_with_exit_status_3() -> None:
    service = _context()
    fatal: list[str] = []
    service._fatal_callbacks.append(lambda: fatal.append(service.supervisor.fatal or ""))
    app = FakeApp()
    worker: Any = FakeWorker()
    settings = AggregatorSettings(stall_s=0.6)
    watch = asyncio.create_task(_watch_faust(worker, app, settings, service, beat_s=0.02))  # type: ignore[arg-type]
    health = service.health.tasks
    for _ in range(50):  # busy: work waiting, but progress on every beat -> healthy, never a stall
        app.pending = STUCK
        app.progress += 1
        await asyncio.sleep(0.02)
    assert health()["aggregator-faust"].state == "running" and not fatal
    for _ in range(200):  # progress stops while records wait
        await asyncio.sleep(0.02)
        if watch.done():
            break
    assert watch.done() and watch.exception() is None
    assert fatal == [service.supervisor.fatal] and fatal[0].startswith("aggregator stalled: 12 records taken")
    assert health()["aggregator-faust"].down and health()["aggregator-faust"].error == "Stalled"
    assert service.health.report()["status"] == "unhealthy"


async def test_with_the_watchdog_off_a_waiting_worker_stays_healthy() -> None:
    service = _context()
    app = FakeApp(pending=STUCK)
    worker: Any = FakeWorker()
    watch = asyncio.create_task(
        _watch_faust(worker, app, AggregatorSettings(stall_s=0), service, beat_s=0.01)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.3)
    assert not watch.done() and service.supervisor.fatal is None and service.health.healthy()
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)


class FakeConsumer:
    """Highwaters per topic-partition; an unassigned one raises as aiokafka does."""

    def __init__(self, ends: dict[tuple[str, int], int]) -> None:
        self.ends = ends

    def highwater(self, tp: Any) -> int:
        if (tp.topic, tp.partition) not in self.ends:
            raise AssertionError("Partition is not assigned")
        return self.ends[(tp.topic, tp.partition)]


def test_the_faust_worker_never_waits_for_records_it_holds_and_tells_the_watchdog_what_waits() -> None:
    """faust's stream_wait_empty (default True) made a rebalance after a Kafka pause, and SIGTERM, wait
    forever for the agent's unacked batch (only the next record or the tick closes it, and neither comes
    during a rebalance)."""
    from prometheus_client import CollectorRegistry

    from services.aggregator.faust_app import AggregatorFaustApp

    worker = AggregatorFaustApp(settings=AggregatorSettings(store="memory", app_id="unit-stall"),
                                common=CommonSettings(), metrics=Metrics(CollectorRegistry()), partitions=2, live=None)
    assert worker.app.conf.stream_wait_empty is False
    assert worker.waiting() == Waiting()
    worker._unacked = [object(), object(), object()]
    worker._closing = 2
    worker._position = {("scores", 0): 10, ("scores", 1): 7, ("lifecycle", 0): 4}
    worker.app.consumer = FakeConsumer({("scores", 0): 25, ("scores", 1): 7})  # type: ignore[assignment]
    assert worker.waiting() == Waiting(records=5, lag=15)  # lifecycle[0] moved away: nothing known there
