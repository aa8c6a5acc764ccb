"""The aggregator service's main coroutine: topics -> engine (booted by ``shared.service``).

Both engines run on the event loop :func:`shared.service.run_service` made. The faust engine
is started with ``await faust.Worker.start()`` (faust's documented way to run a worker on a
loop one already has) rather than ``execute_from_commandline()``, which wants to own and close
the loop. What stays special: once started, faust's worker installs its own SIGINT/SIGTERM
handlers on that loop (``mode.Worker.on_first_start``), replacing run_service's, so a signal
then goes through faust's shutdown (stop the app, commit, close the tables) and ``start()``
returns; a signal before that cancels the start-up like any other service, and the worker is
stopped all the same.
"""

from __future__ import annotations

from services.aggregator.settings import AggregatorSettings
from services.aggregator.topics_setup import TopicSetupError, ensure_topics
from shared.log import get_logger
from shared.service import EXIT_BAD_SETTINGS, ServiceContext, ServiceError
from shared.settings import CommonSettings
from shared.transport.base import LiveBus

_log = get_logger(__name__)


def _live_bus(settings: AggregatorSettings, common: CommonSettings) -> LiveBus | None:
    if not settings.live_state:
        return None
    from shared.transport.redis_streams import RedisLiveBus

    return RedisLiveBus(url=common.redis_url.get_secret_value())


async def serve_aggregator(settings: AggregatorSettings, service: ServiceContext) -> None:
    """Create the topics, then run the configured engine until SIGINT/SIGTERM."""
    try:
        partitions = await ensure_topics(bootstrap=service.common.kafka_bootstrap, settings=settings)
    except TopicSetupError as exc:
        raise ServiceError(str(exc), code=EXIT_BAD_SETTINGS) from exc
    if settings.engine == "plain":
        await _run_plain(settings, service)
    else:
        await _run_faust(settings, service, partitions)


async def _run_plain(settings: AggregatorSettings, service: ServiceContext) -> None:
    from services.aggregator.plain import PlainAggregator
    from shared.transport.kafka import KafkaEventBus

    common = service.common
    events = KafkaEventBus(bootstrap=common.kafka_bootstrap, client_id=f"{settings.app_id}-plain")
    live = _live_bus(settings, common)
    await events.start()
    if live is not None:
        await live.start()
    try:
        await PlainAggregator(settings=settings, events=events, metrics=service.metrics, live=live).run()
    finally:
        if live is not None:
            await live.close()
        await events.close()


async def _run_faust(settings: AggregatorSettings, service: ServiceContext, partitions: int) -> None:
    import asyncio

    import faust

    from services.aggregator.faust_app import AggregatorFaustApp

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker_app = AggregatorFaustApp(
        settings=settings, common=service.common, metrics=service.metrics, partitions=partitions,
        live=_live_bus(settings, service.common),
    )
    # keep the ClassPulse log format (run_service set it up) instead of faust's own
    worker = faust.Worker(
        worker_app.app, loop=asyncio.get_running_loop(), quiet=True, override_logging=False, redirect_stdouts=False
    )
    _log.info("faust aggregator %s -> %s", "starting", "running", extra={"partitions": partitions})
    try:
        await worker.start()  # returns once the worker has stopped
    finally:
        await worker.stop()
    if worker.crash_reason is not None:
        raise worker.crash_reason
