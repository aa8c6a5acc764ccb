"""The speech segment contract and the transcribe worker's loop (memory stream + bus, a stand-in Whisper).

Real Whisper on real Redis + Kafka: ``tests/integration/test_transcribe_worker.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry

from services.inference.transcribe.model import WhisperTranscriber
from services.inference.transcribe.segments import SpeechSegment
from services.inference.transcribe.settings import TranscribeSettings
from services.inference.transcribe.speech_stream import SpeechStream, to_message, to_spoken
from services.inference.transcribe.stage import Speaker, Spoken, TranscribeStage
from services.inference.transcribe.worker import TranscribeWorker
from shared.contracts.codec import DecodeError, EventCodec
from shared.contracts.interactions import InteractionEvent
from shared.contracts.speech import SpeechSegmentMessage, decode_speech, encode_speech
from shared.contracts.topics import INTERACTIONS, TRANSCRIBE_GROUP
from shared.metrics import Metrics
from shared.transport.memory import MemoryEventBus, MemoryMediaBus

pytestmark = pytest.mark.unit


class _Whisper(WhisperTranscriber):
    """Says 'is this on' for every segment (or fails when told to)."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__(settings=TranscribeSettings())
        self.fail = fail
        self.calls: list[int] = []

    @property
    def loaded(self) -> bool:
        return True

    def transcribe_many(self, audios: Sequence[NDArray[np.float32]]) -> list[str]:
        if self.fail:
            raise RuntimeError("whisper failed")
        self.calls.append(len(audios))
        return ["is this on" for _ in audios]


def _spoken(participant: str, start: float) -> Spoken:
    wave = (0.3 * np.sin(np.arange(16000, dtype=np.float32) / 7)).astype(np.float32)
    return Spoken(
        speaker=Speaker(session="s", participant=participant, role="student", epoch=1_700_000_000.0),
        segment=SpeechSegment(start=start, end=start + 1.0, audio=wave, speech_s=0.8),
    )


def test_a_segment_survives_the_wire_as_16_bit_audio() -> None:
    item = _spoken("p", 2.5)
    msg = decode_speech(encode_speech(to_message(item, closed_at=1_700_000_004.0)))
    back = to_spoken(msg)
    assert back.speaker == item.speaker
    assert (back.segment.start, back.segment.end, back.segment.speech_s) == (2.5, 3.5, 0.8)
    assert np.max(np.abs(back.segment.audio - item.segment.audio)) < 1e-4
    assert len(msg.samples) == 2 * 16000


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"CP", "shorter than its header"),
        (b"CPM1\x00\x00\x00\x00", "unknown speech segment magic"),
        (b"CPS1\xff\x00\x00\x00{}", "header length exceeds"),
        (b"CPS1\x02\x00\x00\x00{}", "does not match the contract (session, participant"),
    ],
)
def test_a_malformed_segment_is_one_readable_error(data: bytes, says: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_speech(data)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_segment_longer_than_whisper_reads_is_refused() -> None:
    with pytest.raises(ValueError, match="samples"):
        SpeechSegmentMessage.from_waveform(
            np.zeros(31 * 16000, dtype=np.float32), session="s", participant="p", start=0.0, end=31.0,
            speech_s=1.0, epoch=0.0, closed_at=1.0,
        )


def test_placement_is_the_worker_in_distributed_mode_and_always_inline_in_memory() -> None:
    assert TranscribeSettings().placement_for("distributed") == "worker"
    assert TranscribeSettings().placement_for("memory") == "inline"
    assert TranscribeSettings(placement="inline").placement_for("distributed") == "inline"
    assert TranscribeSettings(placement="worker").placement_for("memory") == "inline"


async def _run(worker: TranscribeWorker, until: int) -> None:
    task = asyncio.create_task(worker.run())
    for _ in range(200):
        if worker.segments >= until:
            break
        await asyncio.sleep(0.01)
    worker.stop()
    await asyncio.wait_for(task, timeout=5)


async def test_the_worker_transcribes_publishes_and_acks_every_segment_once() -> None:
    metrics = Metrics(CollectorRegistry())
    stream, bus = MemoryMediaBus(maxlen=16), MemoryEventBus()
    await bus.start()
    await stream.ensure_group(TRANSCRIBE_GROUP)
    whisper = _Whisper()
    stage = TranscribeStage(settings=TranscribeSettings(read_block_ms=10), keep_text=False, metrics=metrics,
                            model=whisper)
    await SpeechStream(bus=stream, metrics=metrics).send([_spoken("a", 1.0), _spoken("b", 1.0), _spoken("a", 4.0)])
    await stream.append(b"not a segment", key="s/x")
    worker = TranscribeWorker(stage=stage, stream=stream, events=bus, metrics=metrics, consumer="w1")
    await _run(worker, until=3)
    consumer = bus.consumer([INTERACTIONS.name], group="t", from_beginning=True)
    await consumer.start()
    got = [EventCodec(InteractionEvent).decode(r.value) for r in await consumer.poll(max_records=10, timeout_ms=100)]
    assert sorted(e.event_id for e in got) == ["speech:s/a/1000", "speech:s/a/4000", "speech:s/b/1000"]
    assert all(e.source == "speech" and e.text is None and e.words == 3 and e.is_question for e in got)
    assert whisper.calls == [3], "the segments of one read share one Whisper call (packed)"
    assert await stream.length() == 0, "handled (and rejected) segments are acked and deleted"
    assert metrics.errors_total.labels("transcribe", "decode")._value.get() == 1
    assert metrics.transcribe_segments_total.labels("queued")._value.get() == 3
    assert metrics.transcribe_delay_seconds.labels("speech_end")._sum.get() > 0


async def test_a_failed_whisper_call_is_counted_and_its_segments_acked_not_retried_forever() -> None:
    metrics = Metrics(CollectorRegistry())
    stream, bus = MemoryMediaBus(maxlen=16), MemoryEventBus()
    await stream.ensure_group(TRANSCRIBE_GROUP)
    stage = TranscribeStage(settings=TranscribeSettings(read_block_ms=10), keep_text=False, metrics=metrics,
                            model=_Whisper(fail=True))
    await SpeechStream(bus=stream, metrics=metrics).send([_spoken("a", 1.0)])
    worker = TranscribeWorker(stage=stage, stream=stream, events=bus, metrics=metrics, consumer="w1")
    await _run(worker, until=1)
    assert await stream.length() == 0
    assert metrics.errors_total.labels("transcribe", "transcribe")._value.get() == 1


async def test_a_full_stream_evicts_the_oldest_segment_and_counts_it() -> None:
    metrics = Metrics(CollectorRegistry())
    stream = MemoryMediaBus(maxlen=2)
    await SpeechStream(bus=stream, metrics=metrics).send([_spoken("a", float(i)) for i in range(5)])
    assert await stream.length() == 2
    assert metrics.media_dropped_total.labels("speech_stream_full")._value.get() == 3


def test_classpulse_transcribe_refuses_memory_transport_in_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "transcribe"], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin", "PYTHONPATH": "."},
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: classpulse transcribe reads speech segments from Redis: set CLASSPULSE_TRANSPORT=distributed "
        "(classpulse up transcribes in-process)"
    ]


def test_a_lone_segment_takes_a_short_window_and_many_are_packed() -> None:
    from services.inference.transcribe.model import short_windows_cheaper

    assert short_windows_cheaper([3.0], packs=1, window_s=12.0)  # 12 s of encoder instead of 30
    assert short_windows_cheaper([2.0, 4.0], packs=1, window_s=12.0)  # 24 < 30
    assert not short_windows_cheaper([2.0, 3.0, 4.0], packs=1, window_s=12.0)  # one 30 s pack is cheaper
    assert short_windows_cheaper([14.0, 14.0], packs=2, window_s=12.0)  # 15 + 15 < 2 packs of 30
    assert not short_windows_cheaper([3.0], packs=1, window_s=30.0)  # 30: Whisper's window only
