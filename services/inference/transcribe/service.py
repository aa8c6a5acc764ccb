"""``classpulse transcribe``'s main coroutine: Whisper -> speech stream -> worker (booted by ``shared.service``)."""

from __future__ import annotations

import asyncio

from services.inference.transcribe.settings import TranscribeSettings
from services.inference.transcribe.speech_stream import speech_bus
from services.inference.transcribe.stage import TranscribeStage
from services.inference.transcribe.worker import TranscribeWorker
from shared.service import EXIT_BAD_SETTINGS, ServiceContext, ServiceError
from shared.transport.factory import kafka_event_bus


def check_placement(settings: TranscribeSettings, transport: str) -> None:
    """A transcribe worker only makes sense where the inference workers forward segments to it."""
    if transport != "distributed":
        raise ServiceError(
            "classpulse transcribe reads speech segments from Redis: set CLASSPULSE_TRANSPORT=distributed "
            "(classpulse up transcribes in-process)", code=EXIT_BAD_SETTINGS,
        )
    if not settings.enabled or settings.placement_for(transport) != "worker":
        raise ServiceError(
            "CLASSPULSE_TRANSCRIBE_ENABLED=false or CLASSPULSE_TRANSCRIBE_PLACEMENT=inline: the inference workers "
            "send no segments to transcribe workers; unset them (or do not run classpulse transcribe)",
            code=EXIT_BAD_SETTINGS,
        )


async def serve_transcribe(settings: TranscribeSettings, service: ServiceContext) -> None:
    """Run one transcribe worker until SIGINT/SIGTERM (the segments in hand are finished first)."""
    from services.inference.worker import default_consumer_name

    common = service.common
    try:
        stage = TranscribeStage(settings=settings, keep_text=common.keep_text, metrics=service.metrics)
        await asyncio.to_thread(stage.load, vad=False)  # segments come cut: Whisper only
        stream = speech_bus(common, settings)
        events = kafka_event_bus(common, metrics=service.metrics, client_id="classpulse-transcribe")
        await stream.start()
        await events.start()
        worker = TranscribeWorker(
            stage=stage, stream=stream, events=events, metrics=service.metrics, supervisor=service.supervisor,
            consumer=settings.consumer_name or default_consumer_name(),
        )
        service.on_stop(worker.stop)
        try:
            await worker.run()
        finally:
            await events.close()
            await stream.close()
    except (OSError, RuntimeError) as exc:  # ModelError too (a missing Whisper model folder)
        raise ServiceError(f"transcribe worker could not run: {exc}") from exc
