"""Transcription of real recorded speech (Debian's Asterisk prompts): the stage and its live host.

The prompts are decoded from the installed packages at test time (nothing committed); a
handful spread over the set go through the whole stage (0.5 s chunks -> silero-vad segments
-> faster-whisper with the shipped tiny.en -> speech events). ``python -m bench.transcribe_wer``
measures the whole set (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio

import pytest

from services.inference.transcribe.live import LiveTranscriber
from services.inference.transcribe.settings import TranscribeSettings
from services.inference.transcribe.stage import TranscribeStage
from shared.contracts.codec import EventCodec
from shared.contracts.interactions import InteractionEvent
from shared.contracts.topics import INTERACTIONS
from shared.metrics import Metrics
from shared.testkit.prompts import Prompt, as_chunks, decode, prompts, wer
from shared.text import words
from shared.text.questions import is_question
from shared.transport.memory import MemoryEventBus

pytestmark = pytest.mark.integration
WER_BOUND = 0.15
"""On this handful (the whole set measured 5-6 %; the issue's target over the set is 10 %)."""


@pytest.fixture(scope="module")
def chosen() -> list[Prompt]:
    every = prompts()  # fails with the apt-get line when the packages are missing
    assert len(every) > 500
    longer = [p for p in every if len(p.text.split()) >= 4]
    return longer[:: max(1, len(longer) // 10)][:10]


@pytest.fixture(scope="module")
def stage() -> TranscribeStage:
    s = TranscribeStage(settings=TranscribeSettings(), keep_text=True)
    s.load()
    return s


def test_recorded_prompts_are_transcribed_within_the_wer_bound(chosen: list[Prompt], stage: TranscribeStage) -> None:
    refs, hyps = [], []
    for i, prompt in enumerate(chosen):
        chunks = as_chunks(decode(prompt.path), session="wer", participant=f"p{i}", t0=3.0)
        events = [e for c in chunks for e in stage.feed(c)] + stage.flush()
        assert events, f"no speech found in {prompt.name}"
        for e in events:
            assert e.source == "speech" and e.kind == "chat" and e.participant == f"p{i}"
            assert e.start is not None and e.end is not None
            assert 3.0 <= e.start < e.end <= chunks[-1].media_time + chunks[-1].duration + 1e-6
            assert e.words == words(e.text or "")
        refs.append(prompt.text)
        hyps.append(" ".join(e.text or "" for e in events))
    rate, errors, total = wer(refs, hyps)
    print(f"WER {rate:.3f} ({errors}/{total} words, {len(chosen)} prompts)")
    assert total >= 60
    assert rate <= WER_BOUND


def test_without_keep_text_only_derived_features_leave_the_stage(chosen: list[Prompt]) -> None:
    stage = TranscribeStage(settings=TranscribeSettings(), keep_text=False)
    stage.load()
    # A question its words make (not only its "?"): Whisper's punctuation varies with the CPU's float
    # kernels ("Change to which folder?" came back with a full stop on an AVX2-only box).
    question = next(p for p in prompts() if p.text.rstrip().endswith("?") and is_question(p.text.rstrip(" ?")))
    events = [e for c in as_chunks(decode(question.path), session="s", participant="p") for e in stage.feed(c)]
    events += stage.flush()
    assert events and all(e.text is None for e in events)
    assert sum(e.words or 0 for e in events) >= len(question.text.split()) - 2
    assert any(e.is_question for e in events), question.text


async def test_the_live_host_publishes_speech_events_to_the_interactions_topic(chosen: list[Prompt]) -> None:
    from prometheus_client import CollectorRegistry

    bus = MemoryEventBus()
    await bus.start()
    metrics = Metrics(CollectorRegistry())
    settings = TranscribeSettings(idle_flush_s=0.5)
    live = LiveTranscriber(stage=TranscribeStage(settings=settings, keep_text=False, metrics=metrics), bus=bus,
                           metrics=metrics)
    await asyncio.to_thread(live.load)
    consumer = bus.consumer([INTERACTIONS.name], group="t", from_beginning=True)
    await consumer.start()
    task = asyncio.create_task(live.run())
    prompt = chosen[0]
    # the last chunks never come (the participant muted): the idle flush transcribes the open segment
    chunks = as_chunks(decode(prompt.path), session="s", participant="p", pad_s=0.2)
    live.put(chunks)
    got: list[InteractionEvent] = []
    codec = EventCodec(InteractionEvent)
    for _ in range(60):
        got += [codec.decode(r.value) for r in await consumer.poll(max_records=10, timeout_ms=200)]
        if got:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await consumer.close()
    await bus.close()
    assert got, "no speech event published"
    assert all(e.source == "speech" and e.text is None and (e.words or 0) > 0 for e in got)
    assert metrics.transcribe_segments_total.labels("text")._value.get() >= 1
