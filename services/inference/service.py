"""The standalone inference worker's main coroutine: engine -> transports -> worker (booted by ``shared.service``)."""

from __future__ import annotations

import asyncio

from services.inference.engine import InferenceEngine
from services.inference.interactions import InteractionIntake
from services.inference.settings import InferenceSettings
from services.inference.transcribe.live import LiveTranscriber
from services.inference.transcribe.settings import TranscribeSettings
from services.inference.transcribe.speech_stream import SpeechStream, speech_bus
from services.inference.transcribe.stage import TranscribeStage
from services.inference.worker import InferenceWorker
from shared.metrics import Metrics
from shared.service import ServiceContext, ServiceError
from shared.transport.base import EventBus
from shared.transport.factory import build_transports


def live_transcriber(
    settings: TranscribeSettings, *, bus: EventBus, metrics: Metrics, keep_text: bool,
    forward: SpeechStream | None = None,
) -> LiveTranscriber | None:
    """The worker's transcribe stage (None when ``CLASSPULSE_TRANSCRIBE_ENABLED=false``); not loaded yet.

    ``forward``: closed segments go there for ``classpulse transcribe`` workers (placement 'worker');
    None: Whisper runs in this process."""
    if not settings.enabled:
        return None
    stage = TranscribeStage(settings=settings, keep_text=keep_text, metrics=metrics)
    return LiveTranscriber(stage=stage, bus=bus, metrics=metrics, forward=forward)


async def serve_inference(settings: InferenceSettings, service: ServiceContext) -> None:
    """Run one worker until SIGINT/SIGTERM; transports come from settings (memory or Redis + Kafka)."""
    try:
        engine = InferenceEngine(settings=settings, metrics=service.metrics)
        await asyncio.to_thread(engine.load)
        transports = build_transports(service.common, metrics=service.metrics, client_id="classpulse-inference")
        speech_settings = TranscribeSettings()
        forward = None
        if speech_settings.enabled and speech_settings.placement_for(service.common.transport) == "worker":
            forward = SpeechStream(bus=speech_bus(service.common, speech_settings), metrics=service.metrics)
        speech = live_transcriber(
            speech_settings, bus=transports.events, metrics=service.metrics, keep_text=service.common.keep_text,
            forward=forward,
        )
        if speech is not None:
            await asyncio.to_thread(speech.load)
        await transports.start()
        if forward is not None:
            await forward.bus.start()
        worker = InferenceWorker(
            engine=engine, transports=transports, settings=settings, metrics=service.metrics,
            supervisor=service.supervisor, speech=speech,
        )
        service.on_stop(worker.stop)  # finish the running batch, then stop
        intake = InteractionIntake(
            bus=transports.events, engine=engine, metrics=service.metrics, group=f"inference-text-{worker.consumer}"
        )
        text = service.supervisor.spawn("inference-interactions", intake.run)  # chat/questions -> text signals
        tasks = [text] if speech is None else [text, service.supervisor.spawn("inference-transcribe", speech.run)]
        try:
            await worker.run()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await transports.close()
            if forward is not None:
                await forward.bus.close()
            engine.close()
    except (OSError, RuntimeError) as exc:  # ModelError too (a missing Whisper model folder)
        raise ServiceError(f"inference worker could not run: {exc}") from exc
