"""`classpulse up`'s ingest processes: the media/event relay, the merged /metrics, worker choice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.up.ingest_pool import IngestPool
from services.up.metrics_merge import merge_expositions
from services.up.settings import UpProcessSettings
from shared.transport.memory import MemoryEventBus, MemoryMediaBus
from shared.transport.publishes import MemoryPublishRegistry
from shared.transport.relay import MEDIA, RelayError, RelayServer, pack, relay_buses
from shared.transport.shards import shard_of

pytestmark = pytest.mark.unit


async def _until(check: object, within_s: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_relay_applies_media_and_events_in_order_from_two_processes(tmp_path: Path) -> None:
    media = MemoryMediaBus(maxlen=100, shards=4)
    events = MemoryEventBus()
    server = RelayServer(path=tmp_path / "relay.sock", media=media, events=events, publishes=MemoryPublishRegistry())
    await server.start()
    clients = [relay_buses(server.path, shards=4)[:2] for _ in range(2)]
    for m, e in clients:
        await m.start()
        await e.start()
    try:
        for i in range(50):
            for c, (m, _) in enumerate(clients):
                result = await m.append(f"frame-{c}-{i}".encode() * 1000, key=f"s/p{c}")
                assert result.shard == shard_of(f"s/p{c}", 4)
            await clients[0][1].publish("classpulse.lifecycle", "s", f"event-{i}".encode())
        await _until(lambda: server.records == 150)
        await media.ensure_group("g")
        entries = await media.read_group("g", "c", shards=range(4), count=1000, block_ms=10)
        by_key: dict[str, list[bytes]] = {}
        for entry in entries:
            by_key.setdefault(entry.data[:7].decode(), []).append(entry.data)
        assert by_key["frame-0"] == [f"frame-0-{i}".encode() * 1000 for i in range(50)]
        assert by_key["frame-1"] == [f"frame-1-{i}".encode() * 1000 for i in range(50)]
        assert [v for _, v in events.records("classpulse.lifecycle")] == [f"event-{i}".encode() for i in range(50)]
    finally:
        for m, _ in clients:
            await m.close()
        await server.close()
    assert not server.path.exists()


async def test_relay_buses_only_write(tmp_path: Path) -> None:
    media, events, _ = relay_buses(tmp_path / "none.sock", shards=2)
    with pytest.raises(RelayError):
        await media.read_group("g", "c", shards=[0], count=1, block_ms=0)
    with pytest.raises(RelayError):
        events.consumer(["t"], group="g")
    with pytest.raises(RelayError, match="not started"):
        await media.append(b"x", key="s/p")


async def test_a_malformed_record_closes_only_that_connection(tmp_path: Path) -> None:
    media = MemoryMediaBus(maxlen=10, shards=1)
    server = RelayServer(
        path=tmp_path / "r.sock", media=media, events=MemoryEventBus(), publishes=MemoryPublishRegistry()
    )
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(pack(MEDIA, "s/p", "", b"good") + b"X" + b"\0" * 8)  # unknown kind after one good record
        await writer.drain()
        assert await reader.read() == b""  # the server hung up
        writer.close()
        assert server.records == 1
        m, _, _ = relay_buses(server.path, shards=1)
        await m.start()
        await m.append(b"after", key="s/q")  # a new connection still works
        await _until(lambda: server.records == 2)
        await m.close()
    finally:
        await server.close()


async def test_publish_epochs_come_from_the_main_process_across_restarted_clients(tmp_path: Path) -> None:
    registry = MemoryPublishRegistry()
    server = RelayServer(path=tmp_path / "p.sock", media=MemoryMediaBus(maxlen=1), events=MemoryEventBus(),
                         publishes=registry)
    await server.start()
    try:
        epochs = []
        for _ in range(3):  # an ingest process, restarted twice, publishing the same participant
            _, _, publishes = relay_buses(server.path, shards=1)
            await publishes.start()
            first, other = await asyncio.gather(publishes.begin("s", "p"), publishes.begin("s", "q"))
            epochs.append((first.epoch, other.epoch))
            await publishes.close()
        assert epochs == [(0, 0), (1, 1), (2, 2)]
    finally:
        await server.close()


def _exposition(active: float, dropped: float, latencies: list[float], fps: float | None) -> str:
    registry = CollectorRegistry()
    Gauge("classpulse_active_streams", "streams", ["kind"], registry=registry).labels("video").set(active)
    Counter("classpulse_media_dropped", "drops", ["reason"], registry=registry).labels("stale").inc(dropped)
    h = Histogram("classpulse_stage_seconds", "latency", buckets=(0.1, 1.0), registry=registry)
    for v in latencies:
        h.observe(v)
    target = Gauge("classpulse_inference_target_fps", "fps", registry=registry)
    if fps is not None:
        target.set(fps)
    return generate_latest(registry).decode()


def test_merged_metrics_sum_counters_gauges_and_histograms() -> None:
    main = _exposition(0, 3, [0.05], 4.5)  # the main process: inference sets the fps gauge
    workers = [_exposition(2, 1, [0.5, 2.0], None), _exposition(3, 0, [], None)]
    merged = {f.name: f for f in text_string_to_metric_families(merge_expositions([main, *workers]).decode())}
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in merged.values() for s in f.samples}
    assert value[("classpulse_active_streams", (("kind", "video"),))] == 5
    assert value[("classpulse_media_dropped_total", (("reason", "stale"),))] == 4
    assert value[("classpulse_stage_seconds_count", ())] == 3
    assert value[("classpulse_stage_seconds_bucket", (("le", "0.1"),))] == 1
    assert value[("classpulse_stage_seconds_bucket", (("le", "1.0"),))] == 2
    assert value[("classpulse_stage_seconds_sum", ())] == pytest.approx(2.55)
    assert value[("classpulse_inference_target_fps", ())] == 4.5
    assert merged["classpulse_media_dropped"].type == "counter"
    assert merged["classpulse_stage_seconds"].type == "histogram"


def test_participants_spread_round_robin_and_stay_on_their_worker() -> None:
    pool = IngestPool(processes=2)
    first = [pool.worker_for("class", f"p{i}") for i in range(6)]
    assert first == [0, 1, 0, 1, 0, 1]
    assert [pool.worker_for("class", f"p{i}") for i in range(6)] == first  # publishing again: same worker
    assert pool.worker_for("other", "p0") == 0  # another session's participant is another person


@pytest.mark.parametrize(("value", "cores", "expected"), [("auto", 1, 0), ("auto", 2, 2), ("auto", 16, 4), ("0", 8, 0),
                                                          ("3", 1, 3)])
def test_ingest_process_count(value: str, cores: int, expected: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(cores)))
    assert UpProcessSettings(ingest_processes=value).ingest_process_count() == expected
