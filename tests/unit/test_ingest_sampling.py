"""Frame sampling, audio chunking, media clocks and presence state (no network)."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.ingest.aiortc_hooks import SenderReportClock, ntp_to_unix
from services.ingest.lifecycle import PresenceMonitor
from services.ingest.publisher import StreamPublisher
from services.ingest.sampling import AudioChunker, FrameSampler, resize_to_width
from services.ingest.tracks import MediaClock, drain_backlog
from shared.contracts.codec import decode_media
from shared.metrics import Metrics
from shared.transport.base import AppendResult
from shared.transport.memory import MemoryMediaBus

pytestmark = pytest.mark.unit


def _metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def _video(width: int, height: int, value: int = 120) -> av.VideoFrame:
    image = np.full((height, width, 3), value, dtype=np.uint8)
    image[:, : width // 2, 2] = 250  # left half red, to check the channel order survives
    return av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")


def test_frame_sampler_emits_at_analysis_rate_with_increasing_seq() -> None:
    sampler = FrameSampler(session="s", participant="p", fps=5.0, width=320)
    frame = _video(640, 480)
    out = []
    for i in range(60):  # 2 s at 30 fps
        msg = sampler.push(frame, media_time=i / 30, capture_ts=1000.0 + i / 30, received=1000.1 + i / 30)
        if msg is not None:
            out.append(msg)
    assert len(out) == 10
    assert [m.seq for m in out] == list(range(10))
    assert [round(m.media_time, 3) for m in out] == [round(k * 0.2, 3) for k in range(10)]
    first = out[0]
    assert (first.width, first.height) == (320, 240)
    assert first.timing.capture_ts == pytest.approx(1000.0)
    stamp = first.timing.stage("ingest")
    assert stamp is not None and stamp.received == pytest.approx(1000.1)
    image = first.image()
    assert image[120, 10, 2] > 200 and image[120, 300, 2] < 160  # red stays on the left (BGR order)
    assert sampler.frames_seen == 60


def test_frame_sampler_keeps_latest_when_input_is_sparse() -> None:
    sampler = FrameSampler(session="s", participant="p", fps=5.0, width=64)
    frame = _video(64, 48)
    times = [0.0, 0.05, 0.5, 0.55, 0.61, 1.3]
    emitted = [t for t in times if sampler.push(frame, media_time=t, capture_ts=t) is not None]
    assert emitted == [0.0, 0.5, 0.61, 1.3]


def test_resize_keeps_aspect_and_even_height() -> None:
    image = np.zeros((721, 1281, 3), dtype=np.uint8)
    out = resize_to_width(image, 640)
    assert out.shape[1] == 640 and out.shape[0] % 2 == 0
    assert abs(out.shape[0] / 640 - 721 / 1281) < 0.01
    assert resize_to_width(out, 640) is out


def _audio(samples: np.ndarray, rate: int, layout: str, fmt: str) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout=layout)
    frame.sample_rate = rate
    return frame


def _mono_level(frame: av.AudioFrame) -> float:
    chunker = AudioChunker(session="s", participant="p", chunk_s=0.01)
    chunks = chunker.push(frame, media_time=0.0, capture_ts=0.0) + chunker.flush()
    return float(np.concatenate([c.waveform() for c in chunks]).mean())


def test_audio_chunker_downmixes_packed_int16_and_planar_float_to_the_channel_mean() -> None:
    left = np.full(4800, 16384, dtype=np.int16)
    right = np.zeros(4800, dtype=np.int16)
    packed = np.stack([left, right], axis=1).reshape(1, -1)
    assert _mono_level(_audio(packed, 48_000, "stereo", "s16")) == pytest.approx(0.25, abs=1e-3)
    planar = np.stack([np.full(4800, 0.5, np.float32), np.full(4800, -0.1, np.float32)])
    assert _mono_level(_audio(planar, 48_000, "stereo", "fltp")) == pytest.approx(0.2, abs=1e-3)


def test_audio_chunker_resamples_to_16k_fixed_chunks() -> None:
    chunker = AudioChunker(session="s", participant="p", chunk_s=0.5)
    rate = 48_000
    t = np.arange(rate * 2) / rate
    wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    chunks = []
    for start in range(0, len(wave), 960):  # 20 ms Opus-sized frames
        block = wave[start : start + 960]
        chunks += chunker.push_samples(block, rate=rate, media_time=start / rate, capture_ts=500.0 + start / rate)
    chunks += chunker.flush()  # the resampler holds ~1 ms back until the stream ends
    assert len(chunks) == 4
    assert [c.seq for c in chunks] == [0, 1, 2, 3]
    assert [c.media_time for c in chunks] == pytest.approx([0.0, 0.5, 1.0, 1.5])
    for chunk in chunks:
        samples = chunk.waveform()
        assert chunk.sample_rate == 16_000 and len(samples) == 8000 and chunk.duration == pytest.approx(0.5)
        spectrum = np.abs(np.fft.rfft(samples))
        assert np.argmax(spectrum) * 16_000 / len(samples) == pytest.approx(440, abs=4)
    # capture time of a chunk is when its last sample was captured
    assert chunks[1].timing.capture_ts == pytest.approx(500.0 + 1.0, abs=1e-6)


def test_audio_chunker_restarts_after_a_gap() -> None:
    chunker = AudioChunker(session="s", participant="p", chunk_s=0.5)
    block = np.zeros(8000, dtype=np.float32)
    assert chunker.push_samples(block[:4000], rate=16_000, media_time=0.0, capture_ts=0.0) == []
    out = chunker.push_samples(block, rate=16_000, media_time=3.0, capture_ts=3.0)
    assert chunker.gaps == 1
    assert len(out) == 1 and out[0].media_time == pytest.approx(3.0)


def test_media_clock_uses_fastest_frame_and_survives_timestamp_jumps() -> None:
    clock = MediaClock()
    assert clock.map(10.0, 1000.05) == pytest.approx((0.0, 1000.05))
    media, capture = clock.map(10.1, 1000.12)  # arrived faster: offset improves to 1000.02
    assert media == pytest.approx(0.1) and capture == pytest.approx(1000.12)
    media, capture = clock.map(10.2, 1000.30)  # 80 ms late relative to the best frame
    assert capture == pytest.approx(1000.22)
    media, _ = clock.map(0.0, 1000.40)  # timestamps restarted (loop): media time keeps running
    assert clock.jumps == 1 and media == pytest.approx(0.3)


def test_sender_report_clock_maps_rtp_to_sender_wall_clock_with_wrap() -> None:
    wall = 1_700_000_000.25
    ntp = ((int(wall) + 2_208_988_800) << 32) | int(0.25 * (1 << 32))
    assert ntp_to_unix(ntp) == pytest.approx(wall)
    clock = SenderReportClock()
    clock.on_report(ntp, (1 << 32) - 9000)  # 0.1 s before the 32-bit wrap at 90 kHz
    assert clock.capture_rtp(9000, 90_000, arrival=wall + 1.0) == pytest.approx(wall + 0.2)
    assert clock.capture_rtp(9000, 90_000, arrival=wall + 0.1) is None  # would be in the future
    assert clock.capture_rtp(9000, 90_000, arrival=wall + 60) is None  # clocks disagree
    assert clock.rejected == 2


def test_presence_monitor_reports_camera_and_mic_changes() -> None:
    mon = PresenceMonitor(camera_off_after_s=1.0, mic_muted_after_s=1.0, has_video=True, has_audio=False, now=0.0)
    assert mon.initial() == ["mic_muted"]
    mon.video_frame(0.5, black=False)
    assert mon.check(1.0) == []
    mon.video_frame(1.2, black=True)
    mon.video_frame(1.3, black=None)  # unexamined frames inherit "black"
    assert mon.check(1.6) == ["camera_off"]
    mon.video_frame(2.0, black=False)
    mon.audio_frame(2.0, silent=False)
    assert mon.check(2.1) == ["camera_on", "mic_unmuted"]
    mon.audio_frame(2.5, silent=True)
    assert mon.check(3.2) == ["camera_off", "mic_muted"]


def test_presence_monitor_does_not_count_its_own_stall_as_the_camera_going_off() -> None:
    """A busy box: the ingest's loop did not run for 6 s (after a Kafka pause, every service catches up)."""
    mon = PresenceMonitor(camera_off_after_s=2.0, mic_muted_after_s=2.0, has_video=True, has_audio=True, now=0.0)
    mon.video_frame(0.9, black=False)
    mon.audio_frame(0.9, silent=False)
    assert mon.check(1.0) == []
    assert mon.check(7.0) == []  # the first check after the stall: what was missed meanwhile says nothing
    mon.video_frame(7.5, black=False)  # the queued media arrives
    mon.audio_frame(7.5, silent=False)
    assert mon.check(8.0) == []
    for t in (8.25, 8.5, 8.75, 9.0, 9.25):
        assert mon.check(t) == []
    assert mon.check(9.5) == ["camera_off", "mic_muted"]  # really nothing for 2 s of running: off


def test_presence_monitor_keeps_a_camera_on_while_its_packets_arrive_and_decoding_lags() -> None:
    packets: list[float | None] = [None]
    mon = PresenceMonitor(camera_off_after_s=2.0, mic_muted_after_s=2.0, has_video=True, has_audio=False, now=0.0)
    mon.watch_video_packets(lambda: packets[0])
    mon.video_frame(0.5, black=False)
    t = 0.5
    while t < 6.0:  # packets keep coming, no frame decoded for 5.5 s
        t += 0.25
        packets[0] = t - 0.1
        assert mon.check(t) == []
    packets[0] = None  # the sender stops
    assert mon.check(t + 0.25) == ["camera_off"]
    mon.video_frame(t + 0.5, black=True)  # it sends black frames: packets again, but black is off
    packets[0] = t + 0.5
    assert mon.check(t + 0.75) == []


class _SlowBus(MemoryMediaBus):
    def __init__(self) -> None:
        super().__init__(maxlen=100)
        self.release = asyncio.Event()

    async def append(self, data: bytes, *, key: str) -> AppendResult:
        await self.release.wait()
        return await super().append(data, key=key)


async def test_stream_publisher_keeps_latest_and_counts_drops() -> None:
    metrics = _metrics()
    bus = _SlowBus()
    pub = StreamPublisher(bus=bus, metrics=metrics, name="t")
    pub.start()
    sampler = FrameSampler(session="s", participant="p", fps=100.0, width=64)
    frames = [sampler.push(_video(64, 48), media_time=i / 10, capture_ts=float(i)) for i in range(5)]
    pub.offer(frames[0])  # type: ignore[arg-type]
    await asyncio.sleep(0.01)  # the task takes frame 0 and blocks in append
    for f in frames[1:]:
        pub.offer(f)  # type: ignore[arg-type]
    bus.release.set()
    await asyncio.sleep(0.05)
    await pub.close()
    await bus.ensure_group("g")
    got = [decode_media(e.data) for e in await bus.read_group("g", "c", shards=[0], count=10, block_ms=0)]
    assert [m.seq for m in got] == [0, 4]
    assert pub.dropped == 3
    assert metrics.media_dropped_total.labels("publish_backlog")._value.get() == 3
    stamp = got[1].timing.stage("ingest")
    assert stamp is not None and stamp.emitted >= stamp.received


class _Track:
    def __init__(self, items: list[object]) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        for item in items:
            self._queue.put_nowait(item)


def test_drain_backlog_keeps_newest_and_end_marker() -> None:
    metrics = _metrics()
    track = _Track(list(range(20)))
    assert drain_backlog(track, limit=8, metrics=metrics) == 19  # type: ignore[arg-type]
    assert track._queue.get_nowait() == 19
    ended = _Track([*range(10), None])
    drain_backlog(ended, limit=4, metrics=metrics)  # type: ignore[arg-type]
    assert ended._queue.get_nowait() is None
    assert metrics.media_dropped_total.labels("decoder_backlog")._value.get() == 29

