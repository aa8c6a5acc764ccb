"""Thinning at the source: the rate record, and ingest's sampler capped by inference's analysed rate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np
import pytest

from services.inference.degrade import DegradeConfig, DegradePolicy
from services.ingest.sampling import FrameSampler
from shared.transport.memory import MemoryEventBus, MemoryMediaBus
from shared.transport.publishes import MemoryPublishRegistry
from shared.transport.rate import RateError, RateRecord, SourceRate, decode_rate, encode_rate
from shared.transport.relay import RATE, RelayServer, pack, relay_buses

pytestmark = pytest.mark.unit

_FRAME = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), dtype=np.uint8), format="bgr24")


def test_rate_record_round_trips() -> None:
    for fps in (None, 0.1, 2.37, 5.0, 120.0):
        assert decode_rate(encode_rate(RateRecord(fps=fps))) == RateRecord(fps=fps)
    assert decode_rate(b'{"fps": 3}') == RateRecord(fps=3.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"[2.0]", "must be"),
        (b'{"fps": 2, "extra": 1}', "must be"),
        (b'{"fps": "2"}', "number or null"),
        (b'{"fps": true}', "number or null"),
        (b'{"fps": 0}', "within"),
        (b'{"fps": NaN}', "within"),
        (b'{"fps": 1000}', "within"),
    ],
)
def test_a_bad_rate_record_is_one_readable_error(data: bytes, message: str) -> None:
    with pytest.raises(RateError, match=message):
        decode_rate(data)


def _emitted(sampler: FrameSampler, start: int, stop: int, *, fps_in: float = 30.0) -> list[float]:
    out = []
    for i in range(start, stop):
        msg = sampler.push(_FRAME, media_time=i / fps_in, capture_ts=i / fps_in)
        if msg is not None:
            out.append(msg.media_time)
    return out


def test_sampler_follows_the_source_rate_and_counts_what_it_thinned() -> None:
    rate = SourceRate()
    sampler = FrameSampler(session="s", participant="p", fps=5.0, width=64, rate=rate)
    assert len(_emitted(sampler, 0, 60)) == 10  # 2 s at 5 fps: no cap yet
    assert sampler.thinned == 0
    rate.set(RateRecord(fps=2.0))
    assert sampler.current_fps == 2.0
    assert len(_emitted(sampler, 60, 120)) == 4  # 2 s at 2 fps
    assert sampler.thinned == 6  # the 5-fps ticks it left out: counted as analysis frames dropped at the source
    rate.set(RateRecord(fps=8.0))  # never above the sampler's own rate
    assert sampler.current_fps == 5.0
    rate.set(RateRecord(fps=None))
    assert len(_emitted(sampler, 120, 180)) == 10
    assert rate.updates == 3


@pytest.mark.parametrize("offset", [0.0, 0.47, 12.345])
@pytest.mark.parametrize("fps", [1.0, 2.0, 2.37, 3.5])
def test_the_policy_admits_every_frame_sampled_at_its_rate(offset: float, fps: float) -> None:
    """Ingest and the degradation policy tick on one grid of media time (publish offset included),
    so inference thins nothing more: each kept frame is one ingest sampled."""
    rate = SourceRate()
    rate.set(RateRecord(fps=fps))
    sampler = FrameSampler(session="s", participant="p", fps=5.0, width=64, media_offset=offset, rate=rate)
    policy = DegradePolicy(DegradeConfig(), now=0.0)
    policy.target = fps
    emitted = [t for fps_in in (30.0,) for t in _emitted(sampler, 0, 600, fps_in=fps_in)]
    assert len(emitted) >= int(20 * fps) - 1
    assert all(policy.admit("s/p", t, now=0.0) for t in emitted)


async def _until(check: object, within_s: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_the_relay_carries_the_rate_to_every_ingest_process_and_to_later_ones(tmp_path: Path) -> None:
    server = RelayServer(
        path=tmp_path / "r.sock", media=MemoryMediaBus(maxlen=10, shards=1), events=MemoryEventBus(),
        publishes=MemoryPublishRegistry(),
    )  # fmt: skip
    await server.start()
    first, later = SourceRate(), SourceRate()
    media, _, _ = relay_buses(server.path, shards=1, rate=first)
    try:
        await media.start()
        await media.append(b"x", key="s/p")
        await _until(lambda: server.records == 1)  # connected
        server.send_rate(RateRecord(fps=2.5))
        await _until(lambda: first.fps == 2.5)
        media_later, _, _ = relay_buses(server.path, shards=1, rate=later)
        await media_later.start()  # e.g. a restarted ingest process: told the current rate on connect
        await _until(lambda: later.fps == 2.5)
        server.send_rate(RateRecord(fps=None))
        await _until(lambda: first.fps is None and later.fps is None)
        await media_later.close()
    finally:
        await media.close()
        await server.close()


async def test_a_malformed_rate_record_is_ignored(tmp_path: Path) -> None:
    rate = SourceRate()
    path = tmp_path / "fake.sock"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(pack(RATE, "", "", b'{"fps": -1}') + pack(RATE, "", "", b'{"fps": 3}'))
        await writer.drain()
        await reader.read()

    fake = await asyncio.start_unix_server(serve, path=str(path))
    media, _, _ = relay_buses(path, shards=1, rate=rate)
    try:
        await media.start()
        await _until(lambda: rate.fps == 3.0)
        assert rate.updates == 1
    finally:
        await media.close()
        fake.close()
