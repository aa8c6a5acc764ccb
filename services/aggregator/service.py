"""The aggregator service's main coroutine: topics -> engine (booted by ``shared.service``).

Both engines run on the event loop and under the signal handlers of
:func:`shared.service.run_service`. The faust engine is started with ``await Worker.start()``
(faust's documented way to run a worker on a loop one already has) rather than
``execute_from_commandline()``, which wants to own, and then close, the loop. What stays
special: faust's worker would install its own SIGINT/SIGTERM (and SIGUSR1/2 debugging)
handlers once started; it is told not to, and a signal instead does what mode's handler does:
``worker.stop()`` (stop the agents, commit offsets, close the tables), then cancel a start-up
still in progress (changelog recovery), and the service returns only once the stop is done.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from services.aggregator.settings import AggregatorSettings
from services.aggregator.stall import Stalled, StallWatchdog
from services.aggregator.topics_setup import TopicSetupError, ensure_topics
from shared.log import get_logger
from shared.service import EXIT_BAD_SETTINGS, ServiceContext, ServiceError
from shared.settings import CommonSettings
from shared.transport.base import LiveBus

if TYPE_CHECKING:
    import faust

    from services.aggregator.faust_app import AggregatorFaustApp

_log = get_logger(__name__)


def _live_bus(settings: AggregatorSettings, common: CommonSettings) -> LiveBus | None:
    if not settings.live_state:
        return None
    from shared.transport.redis_streams import RedisLiveBus

    return RedisLiveBus(url=common.redis_url.get_secret_value(), state_ttl_s=common.retention_s)


async def serve_aggregator(settings: AggregatorSettings, service: ServiceContext) -> None:
    """Create the topics, then run the configured engine until SIGINT/SIGTERM."""
    try:
        partitions = await ensure_topics(bootstrap=service.common.kafka_bootstrap, settings=settings,
                                         retention_s=service.common.retention_s)
    except TopicSetupError as exc:
        raise ServiceError(str(exc), code=EXIT_BAD_SETTINGS) from exc
    if settings.engine == "plain":
        await _run_plain(settings, service)
    else:
        await _run_faust(settings, service, partitions)


async def _run_plain(settings: AggregatorSettings, service: ServiceContext) -> None:
    from services.aggregator.plain import PlainAggregator
    from shared.transport.factory import kafka_event_bus

    common = service.common
    events = kafka_event_bus(common, metrics=service.metrics, client_id=f"{settings.app_id}-plain")
    live = _live_bus(settings, common)
    await events.start()
    if live is not None:
        await live.start()
    try:
        aggregator = PlainAggregator(settings=settings, events=events, metrics=service.metrics, live=live,
                                     aggregate_only=common.aggregate_only)
        await service.supervisor.spawn("aggregator-plain", aggregator.run)  # broker errors: retried, reported
    finally:
        if live is not None:
            await live.close()
        await events.close()


async def _run_faust(settings: AggregatorSettings, service: ServiceContext, partitions: int) -> None:
    from services.aggregator.faust_app import AggregatorFaustApp

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker_app = AggregatorFaustApp(
        settings=settings, common=service.common, metrics=service.metrics, partitions=partitions,
        live=_live_bus(settings, service.common),
    )
    worker = _worker_class()(
        worker_app.app, loop=asyncio.get_running_loop(), quiet=True,
        override_logging=False, redirect_stdouts=False,  # keep the ClassPulse log format run_service set up
    )
    starting = asyncio.ensure_future(worker.start())  # returns once the worker is stopped

    async def stop_on_signal() -> None:  # what mode.Worker does on SIGINT/SIGTERM
        await worker.stop()
        starting.cancel()  # a stop during start-up (changelog recovery) ends the start too

    stopping: list[asyncio.Future[None]] = []
    service.on_stop(lambda: stopping.append(asyncio.ensure_future(stop_on_signal())))
    _log.info("faust aggregator %s -> %s", "starting", "running", extra={"partitions": partitions})
    watch = asyncio.ensure_future(_watch_faust(worker, worker_app, settings, service))
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await starting
    finally:
        watch.cancel()
        await (stopping[0] if stopping else worker.stop())  # stop() returns once the app has shut down
    if worker.crash_reason is not None:
        raise worker.crash_reason


async def _watch_faust(worker: faust.Worker, app: AggregatorFaustApp, settings: AggregatorSettings,
                       service: ServiceContext, *, beat_s: float = 1.0) -> None:
    """Report the faust worker on ``/healthz`` (task ``aggregator-faust``) and watch it for stalls.

    faust retries broker errors itself; a crashed worker ends the service with its crash reason
    (non-zero exit). With ``CLASSPULSE_AGGREGATOR_STALL_S`` the :class:`StallWatchdog` runs on every
    beat: records waiting without progress make the task unhealthy after a few seconds, and a stall
    gives up (one error line, exit status 3) so the orchestrator restarts the worker."""
    health = service.health.task("aggregator-faust")
    watchdog = StallWatchdog(stall_s=settings.stall_s) if settings.stall_s > 0 else None
    if watchdog is not None:
        health.give_up_s = settings.stall_s  # the watchdog decides when a stall ends the service
    seen = app.progress
    while True:
        degraded, stall = False, None
        if watchdog is not None and worker.started:
            if app.progress != seen:
                seen = app.progress
                watchdog.progressed()
            degraded, stall = watchdog.check(app.waiting())
        if worker.crash_reason is not None:
            health.degraded(worker.crash_reason)
        elif degraded:
            health.degraded(Stalled())
        elif worker.started:
            health.ok()
        if stall is not None:
            _log.error("%s", stall)
            service.supervisor.give_up(stall)
            return
        await asyncio.sleep(beat_s)


def _worker_class() -> type[faust.Worker]:
    import faust

    class Worker(faust.Worker):
        def install_signal_handlers(self) -> None:
            """None: run_service owns SIGINT/SIGTERM and stops the worker through ``service.on_stop``."""

    return Worker
