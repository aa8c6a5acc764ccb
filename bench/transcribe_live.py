"""Live speech -> text latency in distributed mode: end of a spoken segment -> its text event at the viewer.

    python -m bench.transcribe_live [--students 10] [--seconds 60] [--warmup 8]
        [--variant inline:inline:0 --variant worker:worker:1 --variant 'workers2:worker:2' ...]
        [--redis redis://127.0.0.1:6413/0 --kafka 127.0.0.1:19113]

Real Redis + Kafka (default: ``CLASSPULSE_TEST_REDIS_URL`` / ``CLASSPULSE_TEST_KAFKA_BOOTSTRAP``, e.g.
``. .cache/services.env``; the Redis database is flushed between variants, so never point this at
brokers others use). One ``classpulse gateway`` runs for the whole run; per variant a fresh
``classpulse inference`` worker and N ``classpulse transcribe`` workers. The students are this
process acting as ingest: each appends 0.5 s audio chunks of 16 kHz real recorded speech (Debian's
Asterisk prompts, 3-14 words each) to the media stream in real time, a prompt then 2-6 s of
silence, over and over, with random starts; no video. A dashboard-like WebSocket viewer on the
gateway takes every ``interaction`` message with ``source: speech``; latency = its arrival minus
the event's ``ts`` (the capture time of the segment's end: the VAD's hang-over is inside it).

A variant is ``NAME:PLACEMENT:WORKERS[:ENV=VALUE,...]``: placement ``inline`` runs Whisper in the
inference worker (the stage's old home, ``classpulse up``'s path), ``worker`` runs it in WORKERS
transcribe processes fed through the speech stream. Printed per variant: events seen / segments the
students spoke, latency p50 / p95 / max, the transcribe delay spans and Whisper time from the
workers' ``/metrics`` (means), drops, and the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
from numpy.typing import NDArray

SECRET = "bench-secret-0123456789abcdef0123456789"
CHUNK_S = 0.5
RATE = 16000


@dataclass
class Variant:
    name: str
    placement: str
    workers: int
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Variant:
        parts = text.split(":", 3)
        if len(parts) < 3 or parts[1] not in ("inline", "worker"):
            raise argparse.ArgumentTypeError(f"variant {text!r}: NAME:inline|worker:WORKERS[:ENV=V,...]")
        env = dict(kv.split("=", 1) for kv in parts[3].split(",")) if len(parts) == 4 and parts[3] else {}
        return cls(parts[0], parts[1], int(parts[2]), env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


class Procs:
    def __init__(self, base_env: dict[str, str], logs: Path) -> None:
        self.base_env = base_env
        self.logs = logs
        self.running: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
        log = (self.logs / f"{name}.log").open("w")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", *args, env={**self.base_env, **(env or {})},
            stdout=log, stderr=asyncio.subprocess.STDOUT,
        )
        log.close()
        self.running.append((name, proc))
        return proc

    async def stop(self, names: set[str] | None = None) -> None:
        keep = []
        for name, proc in self.running:
            if names is not None and name not in names:
                keep.append((name, proc))
                continue
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), timeout=30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        self.running = keep


async def _wait(url: str, proc: asyncio.subprocess.Process, what: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}")
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{what} did not become ready")


def _speech() -> list[NDArray[np.float32]]:
    from shared.testkit.prompts import decode, prompts

    chosen = [p for p in prompts() if 3 <= len(p.text.split()) <= 14]
    rng = random.Random(7)
    rng.shuffle(chosen)
    return [decode(p.path) for p in chosen[:40]]


async def _student(
    media: object, session: str, participant: str, speech: list[NDArray[np.float32]], seconds: float,
    rng: random.Random, spoken: list[int],
) -> None:
    from shared.contracts.codec import encode_media
    from shared.contracts.media import AudioChunk
    from shared.contracts.timing import TimingTrail
    from shared.transport.shards import participant_key

    n = int(CHUNK_S * RATE)
    parts: list[NDArray[np.float32]] = [np.zeros(int(rng.uniform(0.5, 5.0) * RATE), dtype=np.float32)]
    total = parts[0].size
    while total < seconds * RATE:
        wave = speech[rng.randrange(len(speech))]
        gap = np.zeros(int(rng.uniform(2.0, 6.0) * RATE), dtype=np.float32)
        parts += [wave, gap]
        total += wave.size + gap.size
        if total < seconds * RATE:
            spoken[0] += 1
    audio = np.concatenate(parts)[: int(seconds * RATE)]
    t0 = time.time()
    key = participant_key(session, participant)
    for seq, i in enumerate(range(0, audio.size - n + 1, n)):
        due = t0 + (i + n) / RATE  # a chunk leaves once its last sample was "captured"
        await asyncio.sleep(max(0.0, due - time.time()))
        chunk = AudioChunk.from_waveform(
            audio[i : i + n], sample_rate=RATE, session=session, participant=participant, seq=seq,
            media_time=i / RATE, timing=TimingTrail(capture_ts=t0 + i / RATE),
        )
        await media.append(encode_media(chunk), key=key)  # type: ignore[attr-defined]


async def _viewer(url: str, session: str, since: float, out: list[float], stop: asyncio.Event) -> None:
    from shared.tokens import issue_token

    token = issue_token(secret=SECRET, session=session, participant="*", role="viewer")
    async with aiohttp.ClientSession() as http, http.ws_connect(
        f"{url}/api/sessions/{session}/ws", params={"token": token}, max_msg_size=0
    ) as ws:
        while not stop.is_set():
            try:
                msg = await ws.receive(timeout=0.5)
            except TimeoutError:
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    return
                continue
            now = time.time()
            data = json.loads(msg.data)
            items = data if isinstance(data, list) else [data]
            for item in items:
                event = item.get("event") if isinstance(item, dict) else None
                if item.get("kind") == "interaction" and event and event.get("source") == "speech":
                    if event["ts"] >= since:
                        out.append(now - float(event["ts"]))


def _cpu_s(proc: asyncio.subprocess.Process) -> float:
    """CPU seconds (user + system, all threads) a child used so far, from /proc."""
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _histograms(text: str, name: str) -> dict[str, tuple[float, float]]:
    """label value -> (sum, count) of one histogram in Prometheus text."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for m in re.finditer(rf'^{name}_(sum|count)\{{[a-z_]+="([^"]+)"\}} (\S+)$', text, re.M):
        (sums if m.group(1) == "sum" else counts)[m.group(2)] = float(m.group(3))
    return {k: (sums.get(k, 0.0), counts[k]) for k in counts}


def _counter(text: str, name: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf'^{name}\{{[a-z_]+="([^"]+)"\}} (\S+)$', text, re.M)}


async def _scrape(ports: list[int]) -> list[str]:
    out = []
    async with aiohttp.ClientSession() as http:
        for port in ports:
            try:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    out.append(await r.text())
            except aiohttp.ClientError:
                out.append("")
    return out


async def run_variant(
    v: Variant, *, procs: Procs, gateway: str, common: object, students: int, seconds: float, warmup: float,
    speech: list[NDArray[np.float32]],
) -> dict[str, object]:
    from shared.transport.factory import build_transports
    from shared.transport.redis_streams import RedisMediaBus

    session = f"bench-{v.name}-{int(time.time())}"
    env = {"CLASSPULSE_TRANSCRIBE_PLACEMENT": v.placement, "CLASSPULSE_TRANSCRIBE_STREAM": f"bench:speech:{v.name}",
           **v.env}
    flush = RedisMediaBus(url=common.redis_url.get_secret_value(), stream="x", maxlen=1)  # type: ignore[attr-defined]
    await flush.start()
    await flush.redis.flushdb()
    await flush.close()
    ports = [_free_port()]
    inference = await procs.start(f"{v.name}-inference", "inference", "--metrics-port", str(ports[0]), env=env)
    names = {f"{v.name}-inference"}
    waits = [_wait(f"http://127.0.0.1:{ports[0]}/readyz", inference, "inference")]
    for w in range(v.workers):
        ports.append(_free_port())
        names.add(f"{v.name}-transcribe{w}")
        proc = await procs.start(f"{v.name}-transcribe{w}", "transcribe", "--metrics-port", str(ports[-1]), env=env)
        waits.append(_wait(f"http://127.0.0.1:{ports[-1]}/readyz", proc, "transcribe"))
    await asyncio.gather(*waits)
    transports = build_transports(common, metrics=_metrics())  # type: ignore[arg-type]
    await transports.start()
    load_before = _load()
    since = time.time() + warmup
    latencies: list[float] = []
    stop = asyncio.Event()
    viewer = asyncio.create_task(_viewer(gateway, session, since, latencies, stop))
    await asyncio.sleep(1.0)
    rng = random.Random(11)
    spoken = [0]
    await asyncio.gather(*(
        _student(transports.media, session, f"s{i:02d}", speech, seconds, random.Random(rng.random()), spoken)
        for i in range(students)
    ))
    await asyncio.sleep(15.0)  # the last segments: hang-over, idle flush, queue
    stop.set()
    await viewer
    load_after = _load()
    texts = await _scrape(ports)
    cpu = {name: _cpu_s(proc) for name, proc in procs.running if name in names}
    await transports.close()
    await procs.stop(names)
    whisper = [h for t in texts for h in _histograms(t, "classpulse_transcribe_seconds").values()]
    delays: dict[str, list[tuple[float, float]]] = {}
    for t in texts:
        for span, sc in _histograms(t, "classpulse_transcribe_delay_seconds").items():
            delays.setdefault(span, []).append(sc)
    drops: dict[str, float] = {}
    for t in texts:
        for reason, n in _counter(t, "classpulse_media_dropped_total").items():
            drops[reason] = drops.get(reason, 0.0) + n
    lat = np.array(latencies) if latencies else np.array([float("nan")])

    def mean(pairs: list[tuple[float, float]]) -> float:
        count = sum(c for _, c in pairs)
        return sum(s for s, _ in pairs) / count if count else float("nan")

    return {
        "variant": v.name, "events": len(latencies), "prompts": spoken[0],
        "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)), "max": float(np.max(lat)),
        "whisper_mean": mean(whisper), "whisper_calls": sum(c for _, c in whisper),
        "segmented_mean": mean(delays.get("segmented", [])),
        "queued_mean": mean(delays.get("queued", [])),
        "media_hop_mean": mean([h for t in texts for k, h in _histograms(t, "classpulse_transport_hop_seconds").items()
                                if k == "media"]), "published_mean": mean(delays.get("speech_end", [])),
        "drops": {k: int(n) for k, n in drops.items() if n}, "load": f"{load_before} -> {load_after}",
        "cpu_s": {k.removeprefix(f"{v.name}-"): round(c, 1) for k, c in cpu.items()},
        "wall_s": round(time.time() - since + warmup, 1),
    }


def _metrics() -> object:
    from prometheus_client import CollectorRegistry

    from shared.metrics import Metrics

    return Metrics(CollectorRegistry())


async def amain(args: argparse.Namespace) -> int:
    from shared.settings import CommonSettings

    redis = args.redis or os.environ.get("CLASSPULSE_TEST_REDIS_URL")
    kafka = args.kafka or os.environ.get("CLASSPULSE_TEST_KAFKA_BOOTSTRAP")
    if not redis or not kafka:
        print("error: give --redis and --kafka (or source .cache/services.env)", file=sys.stderr)
        return 2
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    base.update(CLASSPULSE_TRANSPORT="distributed", CLASSPULSE_REDIS_URL=redis, CLASSPULSE_KAFKA_BOOTSTRAP=kafka,
                CLASSPULSE_TOKEN_SECRET=SECRET, CLASSPULSE_LOG_LEVEL="WARNING")
    common = CommonSettings(transport="distributed", redis_url=redis, kafka_bootstrap=kafka,  # type: ignore[arg-type]
                            token_secret=SECRET)  # type: ignore[arg-type]
    logs = Path(args.logs)
    procs = Procs(base, logs)
    speech = _speech()
    port = _free_port()
    rows = []
    try:
        gw = await procs.start("gateway", "gateway", "--host", "127.0.0.1", "--port", str(port))
        await _wait(f"http://127.0.0.1:{port}/healthz", gw, "gateway")
        for v in args.variant:
            print(f"== {v.name}: placement {v.placement}, {v.workers} transcribe workers {v.env or ''} "
                  f"(load {_load()})", flush=True)
            row = await run_variant(v, procs=procs, gateway=f"http://127.0.0.1:{port}", common=common,
                                    students=args.students, seconds=args.seconds, warmup=args.warmup, speech=speech)
            print("  ", json.dumps(row), flush=True)
            rows.append(row)
    finally:
        await procs.stop()
    print(f"\n{args.students} students, {args.seconds:g} s each, speech -> viewer (s); logs in {logs}")
    print("| variant | events / prompts spoken | p50 | p95 | max | segmented mean | queued mean | "
          "whisper call mean (calls) | published mean | CPU s (wall s) | drops | load before -> after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['events']} / {r['prompts']} | {r['p50']:.2f} | {r['p95']:.2f} | {r['max']:.2f} | "
              f"{r['segmented_mean']:.2f} | {r['queued_mean']:.2f} | "
              f"{r['whisper_mean']:.2f} ({r['whisper_calls']:.0f}) | "
              f"{r['published_mean']:.2f} | {r['cpu_s']} ({r['wall_s']}) | {r['drops'] or '-'} | {r['load']} |")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--students", type=int, default=10)
    p.add_argument("--seconds", type=float, default=60.0, help="speech per student and variant")
    p.add_argument("--warmup", type=float, default=8.0, help="segments ending in the first seconds are left out")
    p.add_argument("--variant", type=Variant.parse, action="append", default=None,
                   help="NAME:inline|worker:WORKERS[:ENV=V,...] (repeat; default inline, worker x1, worker x2)")
    p.add_argument("--redis", default=None)
    p.add_argument("--kafka", default=None)
    p.add_argument("--logs", default=".cache/bench-transcribe-live")
    args = p.parse_args()
    Path(args.logs).mkdir(parents=True, exist_ok=True)
    if not args.variant:
        args.variant = [Variant("inline", "inline", 0), Variant("worker1", "worker", 1),
                        Variant("worker2", "worker", 2)]
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
