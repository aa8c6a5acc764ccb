"""Entry point of the aggregator service: settings -> logging -> topics -> engine."""

from __future__ import annotations

import asyncio

from services.aggregator.settings import AggregatorSettings
from shared.log import get_logger, setup_logging
from shared.metrics import default_metrics
from shared.settings import CommonSettings
from shared.transport.base import LiveBus

_log = get_logger(__name__)


def _live_bus(settings: AggregatorSettings, common: CommonSettings) -> LiveBus | None:
    if not settings.live_state:
        return None
    from shared.transport.redis_streams import RedisLiveBus

    return RedisLiveBus(url=common.redis_url.get_secret_value())


def _serve_metrics(settings: AggregatorSettings) -> None:
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_host)
        _log.info("metrics server %s -> %s", "stopped", "listening", extra={"port": settings.metrics_port})


def run_aggregator(*, settings: AggregatorSettings, common: CommonSettings) -> int:
    """Run the configured engine until interrupted; returns the exit status."""
    from services.aggregator.topics_setup import ensure_topics

    setup_logging(level=common.log_level, json_lines=common.log_json, redact_pii=common.log_redact_pii)
    partitions = asyncio.run(ensure_topics(bootstrap=common.kafka_bootstrap, settings=settings))
    _serve_metrics(settings)
    if settings.engine == "plain":
        asyncio.run(_run_plain(settings, common))
        return 0
    return _run_faust(settings, common, partitions)


async def _run_plain(settings: AggregatorSettings, common: CommonSettings) -> None:
    from services.aggregator.plain import PlainAggregator
    from shared.transport.kafka import KafkaEventBus

    events = KafkaEventBus(bootstrap=common.kafka_bootstrap, client_id=f"{settings.app_id}-plain")
    live = _live_bus(settings, common)
    await events.start()
    if live is not None:
        await live.start()
    try:
        await PlainAggregator(settings=settings, events=events, metrics=default_metrics(), live=live).run()
    finally:
        if live is not None:
            await live.close()
        await events.close()


def _run_faust(settings: AggregatorSettings, common: CommonSettings, partitions: int) -> int:
    import faust

    from services.aggregator.faust_app import AggregatorFaustApp

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker_app = AggregatorFaustApp(
        settings=settings, common=common, metrics=default_metrics(), partitions=partitions,
        live=_live_bus(settings, common),
    )
    # keep the ClassPulse log format (setup_logging above) instead of faust's own
    worker = faust.Worker(worker_app.app, loop=loop, quiet=True, override_logging=False, redirect_stdouts=False)
    _log.info("faust aggregator %s -> %s", "starting", "running", extra={"partitions": partitions})
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
