"""Entry point of a standalone inference worker: settings -> transports -> engine -> worker."""

from __future__ import annotations

import asyncio
import signal

from services.inference.engine import InferenceEngine
from services.inference.settings import InferenceSettings
from services.inference.worker import InferenceWorker
from shared.log import get_logger
from shared.metrics import default_metrics
from shared.settings import CommonSettings
from shared.transport.factory import build_transports

log = get_logger(__name__)


async def serve(
    *, settings: InferenceSettings, common: CommonSettings, metrics_port: int | None, metrics_host: str
) -> None:
    """Run one worker until SIGINT/SIGTERM; transports come from settings (memory or Redis + Kafka)."""
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    metrics = default_metrics()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host, registry=metrics.registry)
        log.info("metrics endpoint %s -> %s", "off", "serving", extra={"port": metrics_port})
    engine = InferenceEngine(settings=settings, metrics=metrics)
    await asyncio.to_thread(engine.load)
    transports = build_transports(common, metrics=metrics, client_id="classpulse-inference")
    await transports.start()
    worker = InferenceWorker(engine=engine, transports=transports, settings=settings, metrics=metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        await transports.close()
        engine.close()
