"""``classpulse transcribe`` on real Redis + Kafka: recorded speech reaches ``classpulse.interactions`` once.

The producer side is the inference worker's own code (:class:`LiveTranscriber` with placement
'worker': silero-vad segments -> the speech stream), fed real recorded prompts (Debian's Asterisk
sounds, decoded at test time); the consumer is a real ``classpulse transcribe`` process. A second
segment is taken by a consumer that "dies" without acking: the worker claims it once it has been
idle ``claim_idle_ms``. Each segment's event reaches Kafka exactly once (counted by event id over
everything the session produced, after waiting a while longer for duplicates), and the stream is
empty afterwards (acked segments are deleted). Stream and session names are unique per run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from services.inference.transcribe.live import LiveTranscriber
from services.inference.transcribe.settings import TranscribeSettings
from services.inference.transcribe.speech_stream import SpeechStream, speech_bus
from services.inference.transcribe.stage import TranscribeStage
from shared.contracts.codec import EventCodec
from shared.contracts.interactions import InteractionEvent
from shared.contracts.speech import decode_speech
from shared.contracts.topics import INTERACTIONS, TRANSCRIBE_GROUP
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.testkit.prompts import Prompt, as_chunks, decode, prompts, wer
from shared.transport.factory import kafka_event_bus
from shared.transport.memory import MemoryEventBus

from .classpulse_up import REPO, SECRET, classpulse, free_port

pytestmark = pytest.mark.integration


def _common(redis_url: str, kafka_bootstrap: str) -> CommonSettings:
    return CommonSettings(
        transport="distributed", redis_url=redis_url, kafka_bootstrap=kafka_bootstrap, token_secret=SECRET
    )  # type: ignore[arg-type]


def _two_prompts() -> list[Prompt]:
    longer = [p for p in prompts() if 6 <= len(p.text.split()) <= 14]  # fails with the apt-get line if missing
    assert len(longer) > 20
    return [longer[3], longer[len(longer) // 2]]


def _worker_env(redis_url: str, kafka_bootstrap: str, stream_prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env.update(
        CLASSPULSE_TRANSPORT="distributed", CLASSPULSE_REDIS_URL=redis_url, CLASSPULSE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        CLASSPULSE_TOKEN_SECRET=SECRET, CLASSPULSE_KEEP_TEXT="true", CLASSPULSE_LOG_LEVEL="WARNING",
        CLASSPULSE_TRANSCRIBE_STREAM=stream_prefix, CLASSPULSE_TRANSCRIBE_CLAIM_IDLE_MS="1000",
    )
    return env


def _spawn(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[str]:
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            classpulse("transcribe", "--metrics-port", str(port)), cwd=REPO, env=env, stdout=out,
            stderr=subprocess.STDOUT, text=True,
        )


async def _wait_ready(url: str, proc: subprocess.Popen[str], timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"classpulse transcribe exited with {proc.returncode}"
            try:
                async with http.get(f"{url}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise AssertionError("classpulse transcribe did not become ready")


async def test_recorded_speech_through_the_transcribe_worker_reaches_kafka_once(
    redis_url: str, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    session, stream_prefix = f"speech-{unique}", f"classpulse:test-speech-{unique}"
    settings = TranscribeSettings(stream=stream_prefix, idle_flush_s=0.5, claim_idle_ms=1000)
    common = _common(redis_url, kafka_bootstrap)
    metrics = Metrics(CollectorRegistry())
    chosen = _two_prompts()

    # the inference worker's side: segments of real speech into the speech stream
    stream = speech_bus(common, settings)
    await stream.start()
    await stream.ensure_group(TRANSCRIBE_GROUP)
    live = LiveTranscriber(
        stage=TranscribeStage(settings=settings, keep_text=True, metrics=metrics), bus=MemoryEventBus(),
        metrics=metrics, forward=SpeechStream(bus=stream, metrics=metrics),
    )
    await asyncio.to_thread(live.load)
    assert not live.stage.model.loaded, "a segmenting-only host must not load Whisper"
    host = asyncio.create_task(live.run())
    port = free_port()
    proc = None
    try:
        live.put(as_chunks(decode(chosen[0].path), session=session, participant="p0"))
        for _ in range(100):
            if await stream.length() >= 1:
                break
            await asyncio.sleep(0.1)
        # a consumer takes the first segment and dies without acking it
        dead = await stream.read_group(TRANSCRIBE_GROUP, "dead-worker", shards=[0], count=10, block_ms=1000)
        assert len(dead) == 1 and decode_speech(dead[0].data).participant == "p0"
        live.put(as_chunks(decode(chosen[1].path), session=session, participant="p1"))

        proc = _spawn(_worker_env(redis_url, kafka_bootstrap, stream_prefix), port, tmp_path / "transcribe.log")
        await _wait_ready(f"http://127.0.0.1:{port}", proc)

        events = kafka_event_bus(common, metrics=metrics, client_id="test-transcribe")
        await events.start()
        consumer = events.consumer([INTERACTIONS.name], group=f"test-transcribe-{unique}", from_beginning=True)
        await consumer.start()
        codec = EventCodec(InteractionEvent)
        got: list[InteractionEvent] = []
        deadline = time.monotonic() + 180
        settle: float | None = None
        while time.monotonic() < (settle or deadline):
            records = await consumer.poll(max_records=100, timeout_ms=500)
            got += [e for e in (codec.decode(r.value) for r in records) if e.session == session]
            if settle is None and {e.participant for e in got} == {"p0", "p1"}:
                settle = time.monotonic() + 5.0  # keep reading: a duplicate would show up now
        await consumer.close()
        await events.close()

        assert {e.participant for e in got} == {"p0", "p1"}, f"speech events of {sorted({e.participant for e in got})}"
        ids = Counter(e.event_id for e in got)
        assert all(n == 1 for n in ids.values()), f"duplicates: {ids}"
        assert live.forward is not None and len(got) == live.forward.sent  # one event per forwarded segment
        for e in got:
            assert e.source == "speech" and e.kind == "chat" and e.start is not None and e.end is not None
            assert e.start < e.end and (e.words or 0) > 0
        refs = [p.text for p in chosen]
        hyps = [" ".join(e.text or "" for e in got if e.participant == f"p{i}") for i in range(2)]
        rate, _, _ = wer(refs, hyps)
        assert rate <= 0.25, (rate, refs, hyps)
        assert await stream.length() == 0, "acked segments stay in the stream"

        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
        assert 'classpulse_transcribe_segments_total{outcome="text"} 2.0' in text
        assert 'classpulse_transcribe_delay_seconds_count{span="speech_end"} 2.0' in text
        assert 'classpulse_queue_depth{queue="speech_stream"}' in text
    finally:
        host.cancel()
        await asyncio.gather(host, return_exceptions=True)
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(timeout=30) == 0, f"classpulse transcribe exited with {proc.returncode}"
            finally:
                if proc.poll() is None:
                    proc.kill()
        await stream.redis.delete(stream.stream_name(0))  # type: ignore[attr-defined]
        await stream.close()


async def test_erasing_a_participant_removes_their_speech_waiting_for_transcription(
    redis_url: str, kafka_bootstrap: str, unique: str
) -> None:
    import numpy as np

    from services.inference.transcribe.segments import SpeechSegment
    from services.inference.transcribe.stage import Speaker, Spoken
    from shared.privacy.redis_store import RedisPrivacyStore

    prefix, session = f"classpulse:test-speech-{unique}", f"erase-{unique}"
    stream = speech_bus(_common(redis_url, kafka_bootstrap), TranscribeSettings(stream=prefix))
    await stream.start()
    store = RedisPrivacyStore(url=redis_url, shards=1, retention_s=60, media_prefix=f"{prefix}-media",
                              speech_prefix=prefix)
    await store.start()
    try:
        wave = np.full(8000, 0.1, dtype=np.float32)
        sender = SpeechStream(bus=stream, metrics=Metrics(CollectorRegistry()))
        await sender.send([
            Spoken(speaker=Speaker(session=session, participant=p, role="student", epoch=1.0),
                   segment=SpeechSegment(start=float(i), end=i + 0.5, audio=wave, speech_s=0.4))
            for i, p in enumerate(["bob", "alice", "bob"])
        ])
        erased = {e.what: e.count for e in await store.forget_participant(session, "bob")}
        assert erased["media waiting for analysis"] == 2
        left: list[bytes] = [f[b"d"] for _, f in await stream.redis.xrange(stream.stream_name(0))]  # type: ignore[attr-defined]
        assert [decode_speech(d).participant for d in left] == ["alice"]
    finally:
        await stream.redis.delete(stream.stream_name(0))  # type: ignore[attr-defined]
        await store.close()
        await stream.close()
