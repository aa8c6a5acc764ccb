"""The standalone inference worker's main coroutine: engine -> transports -> worker (booted by ``shared.service``)."""

from __future__ import annotations

import asyncio

from services.inference.engine import InferenceEngine
from services.inference.interactions import InteractionIntake
from services.inference.settings import InferenceSettings
from services.inference.worker import InferenceWorker
from shared.service import ServiceContext, ServiceError
from shared.transport.factory import build_transports


async def serve_inference(settings: InferenceSettings, service: ServiceContext) -> None:
    """Run one worker until SIGINT/SIGTERM; transports come from settings (memory or Redis + Kafka)."""
    try:
        engine = InferenceEngine(settings=settings, metrics=service.metrics)
        await asyncio.to_thread(engine.load)
        transports = build_transports(service.common, metrics=service.metrics, client_id="classpulse-inference")
        await transports.start()
        worker = InferenceWorker(
            engine=engine, transports=transports, settings=settings, metrics=service.metrics,
            supervisor=service.supervisor,
        )
        service.on_stop(worker.stop)  # finish the running batch, then stop
        intake = InteractionIntake(
            bus=transports.events, engine=engine, metrics=service.metrics, group=f"inference-text-{worker.consumer}"
        )
        text = service.supervisor.spawn("inference-interactions", intake.run)  # chat/questions -> text signals
        try:
            await worker.run()
        finally:
            text.cancel()
            await asyncio.gather(text, return_exceptions=True)
            await transports.close()
            engine.close()
    except (OSError, RuntimeError) as exc:
        raise ServiceError(f"inference worker could not run: {exc}") from exc
