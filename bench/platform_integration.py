"""Platform integration figures: webhook delivery after session end, and exports of a long session.

    python -m bench.platform_integration webhooks [--sessions 20] [--students 30] [--seconds 20]
    python -m bench.platform_integration export [--students 30] [--seconds 3600] [--kafka]

Redis comes from CLASSPULSE_TEST_REDIS_URL (`. .cache/services.env`).

``webhooks``: a gateway (memory event bus, the real Redis webhook store, default delivery settings) and a
real HTTP receiver in this process. For each session: scripted scores of ``students``, then
``POST /api/sessions/{s}/end``; latency = end request -> the receiver has the signed ``session.ended``
delivery (p50/p95; includes ``webhook_settle_s``, measured again with settle 0 to show the rest). Then a
receiver that answers 500 three times, then 200: attempt times and the total, with the default backoff.

``export``: a ``seconds`` x ``students`` session (5 scores/s each, scripted behaviour) folded into the
gateway's history, then ``GET .../export`` over HTTP for each table and format: wall time and bytes;
and the session.ended payload's size with and without the timeline. ``--kafka``: the same session produced to
Kafka, then ``classpulse export`` per format (reads the log, rebuilds the report, writes all three tables).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from services.aggregator.scripted import Behaviour, Script, lifecycle_event
from services.gateway.app import create_gateway_app
from services.gateway.context import GATEWAY
from services.gateway.report import build_report
from services.gateway.settings import GatewaySettings
from services.gateway.webhooks.redis_store import RedisWebhookStore
from shared.contracts.topics import LIFECYCLE, SCORES
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.testkit.web import served
from shared.tokens import issue_token
from shared.transport.factory import build_transports
from shared.transport.typed import EventPublisher

SECRET = "bench-secret"


def _behaviour(i: int) -> Any:
    """Seeded noise per step (engagement, attention, speech): real sessions compress far less than a pattern."""

    def at(t: float) -> Behaviour:
        rng = random.Random(i * 10_000_019 + round(t * 5))
        return Behaviour(speaking=rng.random() < 0.05, attentive=rng.random() < 0.8, hand_raised=rng.random() < 0.02,
                         present=rng.random() < 0.97, engagement=round(rng.random(), 4))

    return at


def _script(session: str, students: int, seconds: float, base: float) -> Script:
    s = Script(session=session, base=base, step_s=0.2)
    s.add("teacher", _behaviour(99), role="teacher", end=seconds)
    for i in range(students):
        start = 0.0 if i % 10 else 420.0 % max(seconds, 1.0)  # every tenth student joins late
        s.add(f"s{i:02d}", _behaviour(i), start=start, end=seconds)
    return s


def _auth(session: str, role: str) -> dict[str, str]:
    pid = "t1" if role == "teacher" else "*"
    value = issue_token(secret=SECRET, session=session, participant=pid, role=role)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {value}"}


@asynccontextmanager
async def _gateway(redis_url: str, prefix: str, **settings: Any) -> AsyncIterator[TestClient]:
    common = CommonSettings(token_secret=SECRET)  # type: ignore[arg-type]
    metrics = Metrics(CollectorRegistry())
    app = create_gateway_app(settings=GatewaySettings(**settings), common=common,
                             transports=build_transports(common, metrics=metrics), metrics=metrics,
                             webhook_store=RedisWebhookStore(url=redis_url, prefix=prefix))
    async with TestClient(TestServer(app)) as client:
        yield client


class _Receiver:
    def __init__(self, script: list[int]) -> None:
        self.script = script
        self.got: dict[str, float] = {}
        self.attempts: list[tuple[float, int]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.script.pop(0) if self.script else 200
        now = time.time()
        self.attempts.append((now, status))
        if status == 200:
            self.got.setdefault(json.loads(body)["session"], now)
        return web.Response(status=status)


@asynccontextmanager
async def _receiver(script: list[int]) -> AsyncIterator[tuple[_Receiver, str]]:
    rec = _Receiver(script)
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    async with served(app) as base:
        yield rec, f"{base}/hook"


async def _feed(client: TestClient, session: str, students: int, seconds: float) -> None:
    bus = client.server.app[GATEWAY].events
    assert bus is not None
    base = time.time() - seconds - 5
    life = EventPublisher(bus=bus, topic=LIFECYCLE)
    scores = EventPublisher(bus=bus, topic=SCORES)
    script = _script(session, students, seconds, base)
    for pid in script.participants:
        await life.publish(lifecycle_event(session=session, participant=pid, kind="joined", t=0.0, base=base))
    for e in script.events():
        await scores.publish(e)


async def _until(check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("no delivery")
        await asyncio.sleep(0.01)


async def webhooks(args: argparse.Namespace) -> dict[str, Any]:
    redis_url = os.environ["CLASSPULSE_TEST_REDIS_URL"]
    out: dict[str, Any] = {}
    for label, settle in (("default settle 2 s", 2.0), ("settle 0", 0.0)):
        prefix = f"bench:wh:{time.time_ns()}"
        async with _receiver([]) as (rec, url), _gateway(redis_url, prefix, webhook_settle_s=settle) as client:
            lat: list[float] = []
            for k in range(args.sessions):
                session = f"bench-{k}-{time.time_ns()}"
                resp = await client.post(f"/api/sessions/{session}/webhooks", headers=_auth(session, "teacher"),
                                         json={"url": url})
                assert resp.status == 201
                await _feed(client, session, args.students, args.seconds)
                await asyncio.sleep(0.3)  # the history reader catches up (as in a live class: it is current)
                t0 = time.time()
                ended = await client.post(f"/api/sessions/{session}/end", headers=_auth(session, "platform"))
                assert ended.status == 202
                await _until(lambda s=session: s in rec.got, 30.0)
                lat.append(rec.got[session] - t0)
            lat.sort()
            out[label] = {"n": len(lat), "p50_s": round(statistics.median(lat), 3),
                          "p95_s": round(lat[max(0, round(0.95 * len(lat)) - 1)], 3), "max_s": round(lat[-1], 3)}
            print(f"webhook delivery after session end ({label}, {args.students} students x {args.seconds:.0f} s, "
                  f"n={len(lat)}): p50 {out[label]['p50_s']:.3f} s, p95 {out[label]['p95_s']:.3f} s, "
                  f"max {out[label]['max_s']:.3f} s")
    prefix = f"bench:wh:{time.time_ns()}"
    async with _receiver([500, 500, 500]) as (rec, url), _gateway(redis_url, prefix, webhook_settle_s=0.0) as client:
        session = f"bench-fail3-{time.time_ns()}"
        await client.post(f"/api/sessions/{session}/webhooks", headers=_auth(session, "teacher"), json={"url": url})
        await _feed(client, session, args.students, args.seconds)
        await asyncio.sleep(0.3)
        t0 = time.time()
        await client.post(f"/api/sessions/{session}/end", headers=_auth(session, "platform"))
        await _until(lambda: session in rec.got, 120.0)
        attempts = [(round(t - t0, 2), s) for t, s in rec.attempts]
        out["fails three times"] = {"attempts": attempts, "delivered_after_s": round(rec.got[session] - t0, 2)}
        print(f"receiver failing three times (backoff 2 s doubling, equal jitter): attempts at {attempts}; "
              f"delivered {rec.got[session] - t0:.2f} s after the end")
    return out


async def export(args: argparse.Namespace) -> dict[str, Any]:
    redis_url = os.environ["CLASSPULSE_TEST_REDIS_URL"]
    out: dict[str, Any] = {}
    session = f"bench-export-{time.time_ns()}"
    async with _gateway(redis_url, f"bench:ex:{time.time_ns()}") as client:
        history = client.server.app[GATEWAY].history
        t = time.perf_counter()
        base = time.time() - args.seconds - 5
        script = _script(session, args.students, args.seconds, base)
        events = script.events()
        made = time.perf_counter() - t
        t = time.perf_counter()
        for pid in script.participants:
            history.apply(lifecycle_event(session=session, participant=pid, kind="joined", t=0.0, base=base))
        for i, e in enumerate(events):
            history.apply(e)
            if i % 5000 == 4999:
                history.settle()
        history.apply(lifecycle_event(session=session, participant="teacher", kind="session_ended",
                                      t=args.seconds, base=base, role="teacher"))
        folded = time.perf_counter() - t
        print(f"{len(events):,} score events made in {made:.1f} s, folded into the history in {folded:.1f} s")
        out["events"] = len(events)
        record = history.get(session)
        assert record is not None
        t = time.perf_counter()
        slim = build_report(record, timeline=False).model_dump_json()
        out["webhook_payload"] = {"bytes_without_timeline": len(slim), "build_s": round(time.perf_counter() - t, 2)}
        full = build_report(record, timeline=True).model_dump_json()
        out["webhook_payload"]["bytes_with_timeline"] = len(full)
        print(f"session.ended report: {len(slim):,} bytes without the timeline (built in "
              f"{out['webhook_payload']['build_s']:.2f} s), {len(full):,} bytes with it")
        t = time.perf_counter()
        import pyarrow.parquet  # noqa: F401  (once per process; timed apart from the exports)

        out["pyarrow_import_s"] = round(time.perf_counter() - t, 2)
        print(f"pyarrow import (first Parquet export of a process): {out['pyarrow_import_s']:.2f} s")
        headers = _auth(session, "platform")
        rows = []
        for table in ("timeline", "students", "events"):
            for fmt in ("csv", "jsonl", "parquet"):
                t = time.perf_counter()
                resp = await client.get(f"/api/sessions/{session}/export?format={fmt}&table={table}",
                                        headers=headers)
                size = 0
                first: float | None = None
                async for chunk in resp.content.iter_any():
                    first = first if first is not None else time.perf_counter() - t
                    size += len(chunk)
                wall = time.perf_counter() - t
                assert resp.status == 200, await resp.text()
                rows.append({"table": table, "format": fmt, "bytes": size, "wall_s": round(wall, 2),
                             "first_byte_s": round(first or wall, 2)})
                print(f"export {table:8s} {fmt:7s} {size / 1e6:9.3f} MB  {wall:6.2f} s  "
                      f"(first byte {first or wall:.2f} s)")
        out["exports"] = rows
        if args.kafka:
            life = [lifecycle_event(session=session, participant=pid, kind="joined", t=0.0, base=base)
                    for pid in script.participants]
            out["cli"] = await _cli_from_kafka(session, events, life)
    return out


async def _cli_from_kafka(session: str, events: list[Any], life: list[Any]) -> dict[str, Any]:
    """Produce the session to the real topics, then ``classpulse export`` (all three tables) per format."""
    import tempfile
    from pathlib import Path

    from aiokafka import AIOKafkaProducer

    from services.cli import main as cli
    from shared.contracts.codec import EventCodec
    from shared.contracts.events import LifecycleEvent, ScoreEvent

    bootstrap = os.environ["CLASSPULSE_TEST_KAFKA_BOOTSTRAP"]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    t = time.perf_counter()
    try:
        for topic, codec, items in ((LIFECYCLE.name, EventCodec(LifecycleEvent), life),
                                    (SCORES.name, EventCodec(ScoreEvent), events)):
            for i in range(0, len(items), 5000):
                futures = [await producer.send(topic, codec.encode(e), key=session.encode())
                           for e in items[i:i + 5000]]
                await asyncio.gather(*futures)
    finally:
        await producer.stop()
    print(f"{len(events):,} score events produced to Kafka in {time.perf_counter() - t:.1f} s")
    out: dict[str, Any] = {}
    for fmt in ("csv", "jsonl", "parquet"):
        folder = Path(tempfile.mkdtemp(prefix="classpulse-export-bench-"))
        t = time.perf_counter()
        code = await asyncio.to_thread(cli, ["export", "--session", session, "--format", fmt, "--out", str(folder),
                                             "--bootstrap", bootstrap])
        wall = time.perf_counter() - t
        assert code == 0
        sizes = await asyncio.to_thread(_sizes_and_remove, folder)
        out[fmt] = {"wall_s": round(wall, 1), "bytes": sizes}
        print(f"classpulse export --format {fmt}: {wall:.1f} s (read the log, rebuild, write 3 tables), {sizes}")
    return out


def _sizes_and_remove(folder: Any) -> dict[str, int]:
    sizes = {p.name.rsplit("-", 1)[-1]: p.stat().st_size for p in sorted(folder.iterdir())}
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("webhooks")
    w.add_argument("--sessions", type=int, default=20)
    w.add_argument("--students", type=int, default=30)
    w.add_argument("--seconds", type=float, default=20.0)
    e = sub.add_parser("export")
    e.add_argument("--students", type=int, default=30)
    e.add_argument("--seconds", type=float, default=3600.0)
    e.add_argument("--kafka", action="store_true",
                   help="also produce the session to Kafka (CLASSPULSE_TEST_KAFKA_BOOTSTRAP), time classpulse export")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    result = asyncio.run(webhooks(args) if args.what == "webhooks" else export(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
