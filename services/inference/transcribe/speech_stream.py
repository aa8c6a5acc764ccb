"""The speech segment stream between segmenting and Whisper (distributed mode).

The inference worker that owns a participant's media shard segments its audio (silero-vad)
and appends each closed segment to one bounded Redis stream, ``classpulse:speech:0``
(:mod:`shared.contracts.speech`); ``classpulse transcribe`` workers read it as one consumer
group and publish the speech events. One stream rather than one per media shard: a segment is
self-contained (its audio, speaker, media times and capture epoch), so any transcribe worker
can take any segment, and the consumer group spreads segments over however many workers run,
independently of how media is sharded; the order of segments does not matter downstream
(event ids are stable, each event carries its own start/end). The stream is the same bounded
Redis stream type as media (:class:`~shared.transport.redis_streams.RedisMediaBus`, one shard):
entries are deleted once acked, a full stream evicts its oldest segment and counts it.
"""

from __future__ import annotations

from services.inference.transcribe.segments import SpeechSegment
from services.inference.transcribe.settings import TranscribeSettings
from services.inference.transcribe.stage import Speaker, Spoken
from shared.contracts.speech import SpeechSegmentMessage, encode_speech
from shared.contracts.timing import wall_clock
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.transport.base import MediaBus
from shared.transport.shards import participant_key


def to_message(item: Spoken, *, closed_at: float) -> SpeechSegmentMessage:
    speaker, segment = item.speaker, item.segment
    return SpeechSegmentMessage.from_waveform(
        segment.audio,
        session=speaker.session,
        participant=speaker.participant,
        role=speaker.role,
        start=segment.start,
        end=segment.end,
        speech_s=segment.speech_s,
        epoch=speaker.epoch,
        closed_at=closed_at,
    )


def to_spoken(msg: SpeechSegmentMessage) -> Spoken:
    speaker = Speaker(session=msg.session, participant=msg.participant, role=msg.role, epoch=msg.epoch)
    segment = SpeechSegment(start=msg.start, end=msg.end, audio=msg.waveform(), speech_s=msg.speech_s)
    return Spoken(speaker=speaker, segment=segment)


def speech_bus(common: CommonSettings, settings: TranscribeSettings) -> MediaBus:
    """The Redis stream of speech segments (not started). Evictions are counted by :class:`SpeechStream`."""
    from shared.transport.redis_streams import RedisMediaBus

    return RedisMediaBus(
        url=common.redis_url.get_secret_value(), stream=settings.stream, maxlen=settings.stream_maxlen, shards=1
    )


class SpeechStream:
    """The producer side: closed segments -> the stream (bounded; evicted segments counted)."""

    def __init__(self, *, bus: MediaBus, metrics: Metrics) -> None:
        self.bus = bus
        self._metrics = metrics
        self.sent = 0

    async def send(self, spoken: list[Spoken]) -> None:
        """Append every segment; raises the broker's error (the caller counts what was lost)."""
        now = wall_clock()
        for item in spoken:
            data = encode_speech(to_message(item, closed_at=now))
            result = await self.bus.append(data, key=participant_key(item.speaker.session, item.speaker.participant))
            if result.evicted:
                self._metrics.media_dropped_total.labels("speech_stream_full").inc(result.evicted)
            self._metrics.transcribe_segments_total.labels("queued").inc()
            self.sent += 1
