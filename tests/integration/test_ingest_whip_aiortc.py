"""Real aiortc publishers <-> the WHIP server on loopback: media, ids, timing, limits, cleanup."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from services.ingest.app import WHIP_SERVICE, create_ingest_app
from services.ingest.settings import IngestSettings
from services.ingest.simulate import EncodedClip, Simulation
from services.ingest.whip import WhipService
from shared.contracts.codec import decode_media
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.contracts.topics import LIFECYCLE
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.testkit.clips import write_clip
from shared.testkit.web import served
from shared.transport.factory import Transports
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus
from shared.transport.redis_streams import RedisMediaBus

pytestmark = pytest.mark.integration

SECRET = "integration-secret"
OUR_TASKS = ("consume-", "publish-", "lifecycle-", "whip-close-")


@dataclass
class Server:
    url: str
    service: WhipService
    transports: Transports
    events: MemoryEventBus
    metrics: Metrics


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EncodedClip]:
    folder = tmp_path_factory.mktemp("sim")
    return {
        "vp8": EncodedClip.load(write_clip(folder / "a.webm", seconds=4, video="vp8")),
        "h264": EncodedClip.load(write_clip(folder / "b.mkv", seconds=4, video="h264")),
    }


async def _serve(media: MemoryMediaBus | RedisMediaBus, **settings: object) -> AsyncIterator[Server]:
    common = CommonSettings(token_secret=SECRET)  # type: ignore[arg-type]
    metrics = Metrics(CollectorRegistry())
    events = MemoryEventBus()
    transports = Transports(media=media, events=events, live=MemoryLiveBus())
    app = create_ingest_app(
        settings=IngestSettings(**settings),  # type: ignore[arg-type]
        common=common,
        transports=transports,
        metrics=metrics,
    )
    async with served(app) as base:
        yield Server(base, app[WHIP_SERVICE], transports, events, metrics)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async for s in _serve(MemoryMediaBus(maxlen=512), max_publishers=3):
        yield s


async def _collect(server: Server, seconds: float) -> list[MediaMessage]:
    bus = server.transports.media
    await bus.ensure_group("test")
    out: list[MediaMessage] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        entries = await bus.read_group("test", "c", shards=range(bus.shards), count=100, block_ms=100)
        out += [decode_media(e.data) for e in entries]
        await bus.ack("test", [e.id for e in entries])
    return out


def _lifecycle(server: Server) -> list[tuple[str, str]]:
    events = [LIFECYCLE.model.model_validate_json(v) for _, v in server.events.records(LIFECYCLE.name)]
    return [(e.participant, e.kind) for e in events]


def _ours() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(OUR_TASKS)}


async def test_publishers_deliver_sampled_media_with_ids_and_timing(
    server: Server, clips: dict[str, EncodedClip]
) -> None:
    sim = Simulation(base_url=server.url, session="math", students=2, clip=clips["vp8"], secret=SECRET)
    try:
        assert await sim.start() == 2, sim.errors
        msgs = await _collect(server, 3.0)
        running = _ours()
        for resource in server.service.resources.values():  # the bounded video jitter buffer is in place
            for receiver in resource.pc.getReceivers():
                if receiver.track.kind == "video":
                    assert receiver._RTCRtpReceiver__jitter_buffer.capacity == 128  # type: ignore[attr-defined]
            packets = resource.monitor._video_packets  # camera liveness from RTP arrival, not decoding alone
            assert packets is not None
            last = packets()
            assert last is not None and abs(time.time() - last) < 2.0
    except BaseException:
        await sim.stop()
        raise
    by = collections.defaultdict(list)
    for m in msgs:
        by[(m.participant, m.kind)].append(m)
    assert set(by) == {(p, k) for p in ("student-1", "student-2") for k in ("video", "audio")}
    for (_, kind), items in by.items():
        assert all(m.session == "math" and m.role == "student" for m in items)
        seqs = [m.seq for m in items]
        assert seqs == sorted(seqs) and seqs[0] <= 1
        times = [m.media_time for m in items]
        assert times == sorted(times)
        for m in items:
            stamp = m.timing.stage("ingest")
            assert stamp is not None
            latency = stamp.emitted - m.timing.capture_ts
            assert 0.0 <= latency < 1.0
        frames = [m for m in items if isinstance(m, VideoFrame)]
        chunks = [m for m in items if isinstance(m, AudioChunk)]
        if kind == "video":
            assert 11 <= len(frames) <= 17  # 5 fps for ~3 s
            assert (frames[0].width, frames[0].height) == (640, 480)
            assert frames[-1].image().std() > 10
        else:
            assert 4 <= len(chunks) <= 8 and chunks[0].sample_rate == 16_000
            # 48 kHz stereo Opus, resampled as one stream: chunks follow each other sample-exactly
            assert all(abs(b.media_time - a.media_time - 0.5) < 1e-6 for a, b in itertools.pairwise(chunks))
            assert all(len(c.waveform()) == 8000 for c in chunks)
            assert max(abs(c.waveform()).max() for c in chunks) > 0.1  # the tone bursts arrived
    assert ("student-1", "joined") in _lifecycle(server)

    assert any(name.startswith("consume-") for name in running), "consumer tasks should be running"
    await sim.stop()
    for _ in range(50):
        if not server.service.resources and not _ours():
            break
        await asyncio.sleep(0.1)
    assert server.service.resources == {}
    assert _ours() == set(), "DELETE must end every consumer, publisher and lifecycle task"
    assert _lifecycle(server).count(("student-2", "left")) == 1


async def test_h264_publisher_is_accepted(server: Server, clips: dict[str, EncodedClip]) -> None:
    sim = Simulation(base_url=server.url, session="s", students=1, clip=clips["h264"], secret=SECRET, prefix="h")
    try:
        assert await sim.start() == 1, sim.errors
        msgs = await _collect(server, 2.0)
    finally:
        await sim.stop()
    video = [m for m in msgs if isinstance(m, VideoFrame)]
    assert len(video) >= 6 and video[-1].image().std() > 10


async def test_too_many_publishers_get_429_and_same_participant_replaces(clips: dict[str, EncodedClip]) -> None:
    async for server in _serve(MemoryMediaBus(maxlen=512), max_publishers=1):
        first = Simulation(base_url=server.url, session="s", students=1, clip=clips["vp8"], secret=SECRET, prefix="a")
        other = Simulation(base_url=server.url, session="s", students=1, clip=clips["vp8"], secret=SECRET, prefix="b")
        again = Simulation(base_url=server.url, session="s", students=1, clip=clips["vp8"], secret=SECRET, prefix="a")
        try:
            assert await first.start() == 1
            old = next(iter(server.service.resources))
            assert await other.start() == 0
            assert "429" in other.errors[0] and "retry later" in other.errors[0]
            assert await again.start() == 1  # a reconnecting participant replaces its old resource
            assert list(server.service.resources) != [old] and len(server.service.resources) == 1
            msgs = await _collect(server, 1.0)
            assert any(m.participant == "a-1" for m in msgs)
        finally:
            for sim in (first, other, again):
                await sim.stop()


async def test_media_reaches_a_real_redis_stream(redis_url: str, unique: str, clips: dict[str, EncodedClip]) -> None:
    bus = RedisMediaBus(url=redis_url, stream=f"test:ingest:{unique}", maxlen=256)
    async for server in _serve(bus):
        sim = Simulation(base_url=server.url, session="r", students=1, clip=clips["vp8"], secret=SECRET)
        try:
            assert await sim.start() == 1
            msgs = await _collect(server, 2.0)
        finally:
            await sim.stop()
            await bus.redis.delete(bus.stream_name(0))
    assert {m.kind for m in msgs} == {"video", "audio"}


def _payload_types(sdp: str, name: str) -> set[int]:
    """Payload types the SDP maps to codec ``name`` (e.g. VP8, rtx)."""
    return {int(line.split()[0].split(":")[1]) for line in sdp.splitlines()
            if line.startswith("a=rtpmap:") and line.split()[1].split("/")[0].lower() == name.lower()}


async def test_a_lost_video_packet_withholds_frames_until_a_keyframe(
    server: Server, clips: dict[str, EncodedClip]
) -> None:
    """The publisher's transport loses every video packet for 0.2 s and every retransmission of them (so
    nothing recovers them): ingest's jitter buffer overflows past the hole, withholds the frames that
    reference it (counted as awaiting_keyframe) and delivers frames again from the clip's next keyframe
    (every 2 s)."""
    sim = Simulation(base_url=server.url, session="loss", students=1, clip=clips["vp8"], secret=SECRET)
    try:
        assert await sim.start() == 1, sim.errors
        pc = sim.publishers[0].pc
        video = _payload_types(pc.localDescription.sdp, "VP8")  # retransmissions too: no RTX offered
        assert video
        transport = next(s.transport for s in pc.getSenders() if s.track is not None and s.track.kind == "video")
        send = transport._send_rtp  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        window = (loop.time() + 1.0, loop.time() + 1.2)
        lost: set[int] = set()

        async def lossy(data: bytes) -> None:
            seq = int.from_bytes(data[2:4], "big")
            if data[1] & 0x7F in video and (seq in lost or window[0] <= loop.time() < window[1]):
                lost.add(seq)
                return
            await send(data)

        transport._send_rtp = lossy  # type: ignore[attr-defined]
        msgs = await _collect(server, 6.0)
    finally:
        await sim.stop()
    assert lost
    withheld = server.metrics.media_dropped_total.labels("awaiting_keyframe")._value.get()
    assert withheld > 0, "frames after the hole should wait for a keyframe, not decode to garbage"
    times = [m.media_time for m in msgs if isinstance(m, VideoFrame)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.4 < max(gaps) < 3.0, gaps  # no frame between the hole and the clip's next keyframe (<= 2 s on)
    assert times[-1] - times[0] > 4.0  # and frames came again after it
