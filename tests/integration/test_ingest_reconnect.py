"""Reconnects and double publishes, with real aiortc publishers against the real WHIP server.

The publish epochs live in a real Redis (``RedisPublishRegistry``, as in distributed mode);
media is scored by the real inference engine (a perception stand-in that sees no face, so no
model has to load) and folded into the gateway's history and the aggregation core, the two
consumers that used to throw a reconnect's data away.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from services.gateway.history import SessionHistory
from services.inference.engine import InferenceEngine
from services.inference.settings import InferenceSettings
from services.ingest.app import WHIP_SERVICE, create_ingest_app
from services.ingest.settings import IngestSettings
from services.ingest.simulate import EncodedClip, Simulation
from services.ingest.whip import WhipService
from shared.analytics.config import AggregationConfig
from shared.analytics.session import SessionAggregator
from shared.contracts.codec import decode_media
from shared.contracts.events import ScoreEvent
from shared.contracts.media import MediaMessage, VideoFrame
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.testkit.clips import write_clip
from shared.testkit.web import served
from shared.tokens import issue_token
from shared.transport.factory import Transports
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus
from shared.transport.redis_publishes import RedisPublishRegistry
from tests.perception_fakes import NoFaces

pytestmark = pytest.mark.integration

SECRET = "integration-secret"




@dataclass
class Server:
    url: str
    service: WhipService
    media: MemoryMediaBus
    metrics: Metrics
    collected: list[MediaMessage]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> EncodedClip:
    return EncodedClip.load(write_clip(tmp_path_factory.mktemp("rc") / "a.webm", seconds=4, video="vp8"))


async def _drain(media: MemoryMediaBus, out: list[MediaMessage]) -> None:
    await media.ensure_group("test")
    while True:
        entries = await media.read_group("test", "c", shards=range(media.shards), count=200, block_ms=100)
        out += [decode_media(e.data) for e in entries]
        await media.ack("test", [e.id for e in entries])


@pytest.fixture
async def server(redis_url: str, unique: str) -> AsyncIterator[Server]:
    media = MemoryMediaBus(maxlen=4096)
    registry = RedisPublishRegistry(url=redis_url, prefix=f"test:publish:{unique}")
    metrics = Metrics(CollectorRegistry())
    transports = Transports(media=media, events=MemoryEventBus(), live=MemoryLiveBus(), publishes=registry)
    app = create_ingest_app(
        # Publish locks and slots are under test here, not the per-token/address rate limits (their own tests).
        settings=IngestSettings(
            max_publishers=8, max_publishers_per_session=4, whip_rate_per_token=0.0, whip_rate_per_address=0.0
        ),
        common=CommonSettings(token_secret=SECRET),  # type: ignore[arg-type]
        transports=transports,
        metrics=metrics,
    )
    collected: list[MediaMessage] = []
    drain = asyncio.create_task(_drain(media, collected))
    async with served(app) as base:
        try:
            yield Server(base, app[WHIP_SERVICE], media, metrics, collected)
        finally:
            drain.cancel()


def _score(media: Sequence[MediaMessage]) -> list[ScoreEvent]:
    engine = InferenceEngine(settings=InferenceSettings(), backend=NoFaces())
    engine.load()
    events: list[ScoreEvent] = []
    for i in range(0, len(media), 16):
        events += engine.process(list(media[i : i + 16]))
    return events + engine.flush()


def _gauge(metrics: Metrics, kind: str) -> float:
    return float(metrics.registry.get_sample_value("classpulse_active_streams", {"kind": kind}) or 0.0)


async def _settle(server: Server, seconds: float = 1.0) -> None:
    await asyncio.sleep(seconds)  # the last frames of a publish reach the drain


async def test_a_reconnect_continues_the_participant(server: Server, clip: EncodedClip) -> None:
    spans = []
    for _ in range(2):
        sim = Simulation(base_url=server.url, session="rc", students=1, clip=clip, secret=SECRET, prefix="ann")
        try:
            assert await sim.start() == 1, sim.errors
            await asyncio.sleep(15.0)
        finally:
            await sim.stop()
        await _settle(server)
        spans.append(len(server.collected))
        await asyncio.sleep(2.0)  # away between the publishes: the timeline must show it
    media = list(server.collected)
    video = [m for m in media if isinstance(m, VideoFrame)]
    by_epoch = collections.Counter(m.epoch for m in video)
    assert set(by_epoch) == {0, 1} and min(by_epoch.values()) >= 65, by_epoch  # ~75 frames per 15 s at 5 fps
    assert len({(m.kind, m.epoch, m.seq) for m in media}) == len(media)
    first_end = max(m.media_time for m in video if m.epoch == 0)
    second_start = min(m.media_time for m in video if m.epoch == 1)
    assert 14.0 <= first_end <= 16.5 and first_end + 1.5 <= second_start <= first_end + 5.0

    scores = _score(media)
    ids = [s.event_id for s in scores]
    assert len(ids) == len(set(ids)) and {s.epoch for s in scores} == {0, 1}
    assert any(i.endswith("/0") for i in ids) and any("/1-" in i for i in ids)  # both id formats
    history = SessionHistory(metrics=Metrics(CollectorRegistry()), max_sessions=4, max_rows=10_000, max_aggregates=100)
    for s in scores:
        history.apply(s)
    record = history.get("rc")
    assert record is not None and record.scores == len(scores)  # the gateway keeps the second publish too
    seconds = {int(r.t) for r in record.timeline.observed_rows(participant="ann-1")}
    gap = set(range(int(first_end) + 1, int(second_start)))
    assert gap and not seconds & gap, "the seconds between the publishes are absent"
    assert seconds >= set(range(1, int(first_end))) | set(range(int(second_start) + 1, int(second_start) + 13))

    core = SessionAggregator(session="rc", config=AggregationConfig())
    for s in scores:
        core.add_score(s)
    aggregates, _ = core.flush()
    assert core.late_events == 0
    present = {a.window.start for a in aggregates if a.window.size_s == 1.0 and "ann-1" in a.participants}
    assert len(present) >= 26  # both 15 s spans aggregated, not just the first
    assert _gauge(server.metrics, "publisher") == 0.0


async def test_quick_publish_delete_cycles_keep_every_scored_frame_unique(server: Server, clip: EncodedClip) -> None:
    cycles = int(os.environ.get("CLASSPULSE_TEST_PUBLISH_CYCLES", "200"))
    connected = 0
    for _ in range(cycles):
        sim = Simulation(base_url=server.url, session="cy", students=1, clip=clip, secret=SECRET, prefix="bob")
        try:
            connected += await sim.start()
            await asyncio.sleep(0.25)
        finally:
            await sim.stop()
    await _settle(server)
    media = list(server.collected)
    assert connected == cycles and media
    assert len({(m.kind, m.epoch, m.seq) for m in media}) == len(media)
    scores = _score(media)
    assert len({s.event_id for s in scores}) == len(scores)
    history = SessionHistory(metrics=Metrics(CollectorRegistry()), max_sessions=4, max_rows=10_000, max_aggregates=10)
    for s in sorted(scores, key=ScoreEvent.order):
        history.apply(s)
    record = history.get("cy")
    assert record is not None and record.scores == len(scores)
    epochs = {s.epoch for s in scores}
    assert len(epochs) >= cycles // 2, len(epochs)  # most cycles delivered frames, each under its own epoch
    assert _gauge(server.metrics, "publisher") == 0.0 and server.service.resources == {}
    print(f"{cycles} cycles: {len(media)} media messages, {len(scores)} scores, {len(epochs)} epochs, all kept")


async def test_concurrent_publishes_for_one_participant_leave_one_resource(server: Server, clip: EncodedClip) -> None:
    same = [
        Simulation(base_url=server.url, session="cc", students=1, clip=clip, secret=SECRET, prefix="dup")
        for _ in range(20)
    ]
    results = await asyncio.gather(*(s.start() for s in same))
    try:
        errors = [e for s in same for e in s.errors]
        assert sum(results) == 1 and len(errors) == 19, (results, errors)
        assert all("409" in e and "already publishing" in e for e in errors)
        assert [r.participant for r in server.service.resources.values()] == ["dup-1"]
        assert _gauge(server.metrics, "publisher") == 1.0
        others = Simulation(base_url=server.url, session="cc", students=3, clip=clip, secret=SECRET, prefix="oth")
        try:
            assert await others.start() == 3, others.errors  # everybody else is still admitted
            assert _gauge(server.metrics, "publisher") == 4.0
            full = Simulation(base_url=server.url, session="cc", students=1, clip=clip, secret=SECRET, prefix="x")
            other_session = Simulation(base_url=server.url, session="cd", students=1, clip=clip, secret=SECRET)
            try:
                assert await full.start() == 0 and "429" in full.errors[0] and "this session" in full.errors[0]
                assert await other_session.start() == 1  # the bound is per session
            finally:
                await full.stop()
                await other_session.stop()
        finally:
            await others.stop()
    finally:
        for s in same:
            await s.stop()
    for _ in range(50):
        if not server.service.resources:
            break
        await asyncio.sleep(0.1)
    assert server.service.resources == {} and _gauge(server.metrics, "publisher") == 0.0


async def test_failed_negotiations_leave_the_gauges_true(server: Server, clip: EncodedClip) -> None:
    token = issue_token(secret=SECRET, session="fz", participant="eve", role="student")
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    good = Simulation(base_url=server.url, session="fz", students=1, clip=clip, secret=SECRET, prefix="ok")
    try:
        assert await good.start() == 1
        offer = await _real_offer()
        broken = [
            offer.replace("a=fingerprint:sha-256 ", "a=fingerprint:sha-256 zz"),  # passes our check, not aiortc's
            offer.replace("a=setup:actpass", "a=setup:bogus"),
            offer.replace("a=ice-pwd:", "a=ice-pwd:x"),
            offer.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=audio 9 UDP/TLS/RTP/SAVPF 111 200"),
            "v=0\r\n",
            offer[: len(offer) // 2],
        ]
        statuses = collections.Counter()
        async with aiohttp.ClientSession() as http:
            for _ in range(20):
                for body in broken:
                    async with http.post(f"{server.url}/whip/fz/eve", data=body, headers=headers) as resp:
                        statuses[resp.status] += 1
                        text = await resp.text()
                        assert resp.status == 201 or text.count("\n") == 1  # one readable line ...
                        assert "NoneType" not in text and "attribute" not in text  # ... without internals
                        if resp.status == 201:
                            await http.delete(server.url + resp.headers["Location"], headers={
                                "Authorization": f"Bearer {token}"})
        await asyncio.sleep(0.5)  # any 'closed' callbacks of the failed peer connections run
        assert statuses[400] >= 60, statuses
        live = list(server.service.resources.values())  # the good publisher (unless a loaded box dropped it)
        assert _gauge(server.metrics, "publisher") == len(live) and len(live) <= 1  # true; never below
        for kind in ("video", "audio"):
            assert _gauge(server.metrics, kind) == sum(kind in r.samplers for r in live)
    finally:
        await good.stop()
    for _ in range(50):
        if not server.service.resources:
            break
        await asyncio.sleep(0.1)
    assert _gauge(server.metrics, "publisher") == 0.0
    assert _gauge(server.metrics, "video") == 0.0 and _gauge(server.metrics, "audio") == 0.0


async def _real_offer() -> str:
    """An offer from a real aiortc peer (camera + microphone), to break in ways only aiortc notices."""
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

    pc = RTCPeerConnection()
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def test_redis_registry_counts_on_the_server_clock_and_survives_a_script_flush(
    redis_url: str, unique: str
) -> None:
    reg = RedisPublishRegistry(url=redis_url, prefix=f"test:publish:{unique}")
    await reg.start()
    try:
        first = await reg.begin("s", "a")
        await asyncio.sleep(0.3)
        await reg.redis.script_flush()  # a Redis restart loses loaded scripts
        second = await reg.begin("s", "a")
        other = await reg.begin("s", "b")
        assert (first.epoch, first.offset) == (0, 0.0) and other.epoch == 0
        assert second.epoch == 1 and 0.28 <= second.offset <= 1.0
        ttl = await reg.redis.pttl(reg.key("s", "a"))
        assert 0 < ttl <= 7 * 24 * 3600 * 1000
    finally:
        await reg.redis.delete(reg.key("s", "a"), reg.key("s", "b"))
        await reg.close()
