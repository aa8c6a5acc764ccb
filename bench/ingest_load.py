"""Ingest load: N simulated students publishing over WHIP to one ingest process.

    python -m bench.ingest_load [--students 1 5 10 20] [--seconds 30] [--warmup 5]

For each N, three processes:

* **server**: the ingest app (WHIP, aiortc decode, sampling at 5 fps, publish to an
  in-memory media stream) plus a stand-in consumer that drains the stream the way
  inference would (it reads, decodes the header, acks) and records each message's
  capture -> media-transport latency (``ingest.emitted - capture_ts``; capture time from
  the publishers' RTCP sender reports, same host clock);
* **publishers**: ``classpulse simulate`` relaying a pre-encoded 640x480 @ 15 fps VP8 +
  Opus clip (no encoding), in its own process;
* this orchestrator, which samples both processes' CPU from ``/proc`` over the measured
  window (after ``--warmup``) and reads the server's stats.

Reported per N: server CPU (% of one core), publisher CPU, sampled video frames/s per
stream, audio chunks/s per stream, drops by reason (plus ``kernel_udp``: datagrams the kernel
dropped for full socket buffers, system-wide, from /proc/net/snmp), latency p50/p95, server
RSS at the end. The box is shared: the load average before each run is printed with it.

With ``--workers 1 2`` each N is run once per worker count, side by side, through the real
``classpulse ingest --workers W`` on the distributed transport (Redis media stream in
database 14 of ``--redis-url``, events to Kafka): server CPU is the supervisor plus its
workers (``--workers 1`` is the single-process server), fps/stream and drops come from the
workers' own ``/metrics`` (``classpulse_messages_total{stage="ingest"}``), and a stand-in
consumer in its own process (CPU reported apart) reads the Redis stream for latency:

    python -m bench.ingest_load --students 10 20 40 --workers 1 2 --seconds 20

Memory per process in those runs: the RSS of the supervisor and of each worker (``--workers 1``:
the single process) once it serves and before any publisher connects (idle), at the end of the
measured window (loaded) and its peak (VmHWM). ``--trees A B`` runs each (N, W) once per source
tree, side by side, with the server started from that tree (``PYTHONPATH=A``, the publishers and
consumer from this one), e.g. main before and a branch after a change:

    python -m bench.ingest_load --students 10 --workers 1 2 --seconds 20 --trees /work/main .
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

SECRET = "bench-ingest-secret"
SESSION = "load"
_TICK = os.sysconf("SC_CLK_TCK")
_MAXLEN = 32  # bound of each of the 16 media shard streams in the workers runs (~1 MB per frame on a shared Redis)
_PER_SIM = 20  # publishers per `classpulse simulate` process
_BENCH_DB = 14  # Redis database of the workers runs, away from other users' streams


def _bench_redis(url: str) -> str:
    return f"{url.rsplit('/', 1)[0]}/{_BENCH_DB}"


# -- server mode ---------------------------------------------------------------------------


async def _serve(port: int) -> None:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from services.ingest.app import WHIP_SERVICE, create_ingest_app
    from services.ingest.settings import IngestSettings
    from shared.metrics import Metrics
    from shared.settings import CommonSettings
    from shared.transport.factory import build_transports

    common = CommonSettings(token_secret=SECRET)  # type: ignore[arg-type]
    metrics = Metrics(CollectorRegistry())
    transports = build_transports(common, metrics=metrics)
    app = create_ingest_app(
        settings=IngestSettings(max_publishers=200), common=common, transports=transports, metrics=metrics
    )
    state: dict[str, object] = {"latency": [], "counts": Counter(), "since": time.time()}

    async def consume() -> None:
        await _consume(transports.media, state)

    def dropped() -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in metrics.media_dropped_total.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["reason"]] = sample.value
        return out

    async def reset(_: web.Request) -> web.Response:
        state.update(latency=[], counts=Counter(), since=time.time(), drops=dropped())
        return web.json_response({"ok": True})

    async def stats(_: web.Request) -> web.Response:
        base = state.get("drops", {})
        now = dropped()
        drops = {k: v - base.get(k, 0.0) for k, v in now.items()}  # type: ignore[attr-defined]
        rss_kb = _rss_kb()
        return web.json_response(
            {
                "window_s": time.time() - float(state["since"]),  # type: ignore[arg-type]
                "latency": state["latency"],
                "counts": dict(state["counts"]),  # type: ignore[call-overload]
                "drops": drops,
                "publishers": len(app[WHIP_SERVICE].resources),
                "rss_mb": rss_kb / 1024,
            }
        )

    app.router.add_post("/bench/reset", reset)
    app.router.add_get("/bench/stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(json.dumps({"port": bound}), flush=True)
    task = asyncio.create_task(consume())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    task.cancel()
    await runner.cleanup()


async def _consume(bus: Any, state: dict[str, object]) -> None:
    """Drain the media stream the way inference would; record capture -> media-transport latency."""
    await bus.ensure_group("bench")
    while True:
        entries = await bus.read_group("bench", "c", shards=range(bus.shards), count=64, block_ms=200)
        for entry in entries:
            header = media_header(entry.data)  # ids and timing only: inference decodes pixels elsewhere
            stamps = [s for s in header["timing"]["stages"] if s["stage"] == "ingest"]
            if stamps and header["kind"] == "video" and header["session"] == SESSION:
                latency = stamps[-1]["emitted"] - header["timing"]["capture_ts"]
                state["latency"].append(latency)  # type: ignore[attr-defined]
            state["counts"][header["kind"]] += 1  # type: ignore[index]
        if entries:
            await bus.ack("bench", [e.id for e in entries])


async def _consumer(redis_url: str, maxlen: int) -> None:
    """``--consume``: the stand-in consumer of the Redis media stream, with reset/stats over HTTP."""
    from aiohttp import web

    from shared.contracts.topics import MEDIA_STREAM
    from shared.settings import CommonSettings
    from shared.transport.redis_streams import RedisMediaBus

    shards = CommonSettings.model_fields["media_shards"].default  # the ingest workers run with the default
    bus = RedisMediaBus(url=redis_url, stream=MEDIA_STREAM, maxlen=maxlen, shards=shards)
    await bus.start()
    streams = [bus.stream_name(k) for k in range(shards)]
    await bus.redis.delete(*streams)
    state: dict[str, object] = {"latency": [], "counts": Counter(), "since": time.time()}

    async def reset(_: web.Request) -> web.Response:
        state.update(latency=[], counts=Counter(), since=time.time())
        return web.json_response({"ok": True})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"latency": state["latency"], "counts": dict(state["counts"])})  # type: ignore[call-overload]

    app = web.Application()
    app.router.add_post("/bench/reset", reset)
    app.router.add_get("/bench/stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(json.dumps({"port": site._server.sockets[0].getsockname()[1]}), flush=True)  # type: ignore[union-attr]
    task = asyncio.create_task(_consume(bus, state))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await runner.cleanup()
    await bus.redis.delete(*streams)  # ~1 MB per frame: leave nothing behind on the shared Redis
    await bus.close()


def media_header(data: bytes) -> dict[str, Any]:
    """The JSON header of an encoded media message (see shared.contracts.codec), payload skipped."""
    (length,) = struct.unpack_from("<I", data, 4)
    header: dict[str, Any] = json.loads(data[8 : 8 + length])
    return header


def _rss_kb() -> int:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


# -- orchestrator --------------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _udp_rcvbuf_errors() -> int:
    """System-wide UDP datagrams the kernel dropped because a socket's receive buffer was full."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env["CLASSPULSE_TOKEN_SECRET"] = SECRET
    env["CLASSPULSE_LOG_LEVEL"] = "WARNING"
    return env


def _spawn(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env or _env(), text=True, cwd=cwd)


async def _run_one(n: int, *, seconds: float, warmup: float, media: Path | None) -> dict[str, object]:
    server = _spawn([sys.executable, "-m", "bench.ingest_load", "--serve"])
    assert server.stdout is not None
    port = json.loads(await asyncio.to_thread(server.stdout.readline))["port"]
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "services.cli", "simulate", "--session", SESSION, "--students", str(n),
        "--url", url, "--duration", str(warmup + seconds + 30),
    ]  # fmt: skip
    if media is not None:
        cmd += ["--media", str(media)]
    sim = _spawn(cmd)
    try:
        assert sim.stdout is not None
        line = await asyncio.to_thread(sim.stdout.readline)
        if not line.startswith(f"{n}/{n}"):
            raise RuntimeError(f"simulate did not connect every publisher: {line.strip()!r}")
        await asyncio.sleep(warmup)
        async with aiohttp.ClientSession() as http:
            await (await http.post(url + "/bench/reset")).release()
            cpu0 = (_cpu_s(server.pid), _cpu_s(sim.pid))
            udp0 = _udp_rcvbuf_errors()
            t0 = time.monotonic()
            await asyncio.sleep(seconds)
            cpu1 = (_cpu_s(server.pid), _cpu_s(sim.pid))
            udp_drops = _udp_rcvbuf_errors() - udp0
            elapsed = time.monotonic() - t0
            stats = await (await http.get(url + "/bench/stats")).json()
    finally:
        for proc in (sim, server):
            proc.send_signal(signal.SIGTERM)
        for proc in (sim, server):
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
    window = float(stats["window_s"])
    lat = np.array(stats["latency"]) * 1000 if stats["latency"] else np.array([np.nan])
    counts = stats["counts"]
    return {
        "students": n,
        "server_cpu_pct": round(100 * (cpu1[0] - cpu0[0]) / elapsed, 1),
        "publisher_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / elapsed, 1),
        "video_fps_per_stream": round(counts.get("video", 0) / window / n, 2),
        "audio_chunks_per_s_per_stream": round(counts.get("audio", 0) / window / n, 2),
        "drops": {k: int(v) for k, v in stats["drops"].items() if v} | ({"kernel_udp": udp_drops} if udp_drops else {}),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 1),
        "server_rss_mb": round(stats["rss_mb"], 1),
        "window_s": round(window, 1),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(text: str) -> dict[str, float]:
    """Ingest messages and drops (by reason) from one worker's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "classpulse_messages_total" and sample.labels.get("stage") == "ingest":
                key = "msg_" + sample.labels["kind"]
                out[key] = out.get(key, 0.0) + sample.value
            elif sample.name == "classpulse_media_dropped_total":
                key = "drop_" + sample.labels["reason"]
                out[key] = out.get(key, 0.0) + sample.value
    return out


async def _scrape_all(http: aiohttp.ClientSession, urls: list[str]) -> dict[str, float]:
    total: dict[str, float] = {}
    for url in urls:
        async with http.get(url + "/metrics") as resp:
            for key, value in _scrape(await resp.text()).items():
                total[key] = total.get(key, 0.0) + value
    return total


def _status_mb(pid: int, field: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return round(next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024, 1)


def _memory(roles: dict[str, int]) -> dict[str, float]:
    """RSS in MB of each process, by role (``supervisor``, ``worker0``, ...)."""
    return {role: _status_mb(pid, "VmRSS") for role, pid in roles.items()}


async def _run_workers(
    n: int,
    workers: int,
    *,
    seconds: float,
    warmup: float,
    media: Path,
    redis_url: str,
    kafka: str,
    tmp: Path,
    tree: Path | None = None,
) -> dict[str, object]:
    """One run through the real ``classpulse ingest --workers W`` on Redis + Kafka (from ``tree``)."""
    port = _free_port()
    runtime = tmp / f"run-{n}-{workers}-{tree.name if tree else 'here'}-{port}"
    env = _env() | {
        "CLASSPULSE_TRANSPORT": "distributed", "CLASSPULSE_REDIS_URL": redis_url, "CLASSPULSE_KAFKA_BOOTSTRAP": kafka,
        "CLASSPULSE_INGEST_MAX_PUBLISHERS": "200", "CLASSPULSE_MEDIA_STREAM_MAXLEN": str(_MAXLEN),
    }  # fmt: skip
    consumer = _spawn([sys.executable, "-m", "bench.ingest_load", "--consume", redis_url], env)
    assert consumer.stdout is not None
    curl = f"http://127.0.0.1:{json.loads(await asyncio.to_thread(consumer.stdout.readline))['port']}"
    cmd = [sys.executable, "-m", "services.cli", "ingest", "--workers", str(workers), "--port", str(port)]
    server_env = env | ({"PYTHONPATH": str(tree)} if tree is not None else {})
    server = _spawn([*cmd, "--runtime-dir", str(runtime)], server_env, cwd=tree)
    procs = [consumer, server]
    try:
        assert server.stdout is not None
        line = await asyncio.to_thread(server.stdout.readline)
        if "listening" not in line:
            raise RuntimeError(f"ingest did not start: {line.strip()!r}")
        url = f"http://127.0.0.1:{port}"
        pids, metric_urls = [server.pid], [url]
        roles = {"worker0": server.pid}
        if workers > 1:
            registry = [json.loads((runtime / f"worker-{i}.json").read_text()) for i in range(workers)]
            pids += [r["pid"] for r in registry]
            metric_urls = [f"http://127.0.0.1:{r['port']}" for r in registry]
            roles = {"supervisor": server.pid} | {f"worker{i}": r["pid"] for i, r in enumerate(registry)}
        await asyncio.sleep(2.0)  # serving, no publisher yet: every import and the app are in
        idle = _memory(roles)
        sims = []
        for j, start in enumerate(range(0, n, _PER_SIM)):  # <= 20 publishers per simulate process
            count = min(_PER_SIM, n - start)
            sims.append(_spawn([
                sys.executable, "-m", "services.cli", "simulate", "--session", SESSION, "--students", str(count),
                "--url", url, "--duration", str(warmup + seconds + 30), "--media", str(media), "--prefix", f"s{j}",
            ]))  # fmt: skip
            procs.insert(0, sims[-1])
        lines = await asyncio.gather(*(asyncio.to_thread(sim.stdout.readline) for sim in sims))  # type: ignore[union-attr]
        connected = sum(int(line.split("/")[0]) for line in lines if line.split("/")[0].isdigit())
        if connected != n:
            raise RuntimeError(f"simulate did not connect every publisher: {[x.strip() for x in lines]!r}")
        await asyncio.sleep(warmup)
        async with aiohttp.ClientSession() as http:
            await (await http.post(curl + "/bench/reset")).release()
            m0 = await _scrape_all(http, metric_urls)
            cpu0 = [_cpu_s(p) for p in pids], [_cpu_s(s.pid) for s in sims], _cpu_s(consumer.pid)
            udp0, t0 = _udp_rcvbuf_errors(), time.monotonic()
            await asyncio.sleep(seconds)
            cpu1 = [_cpu_s(p) for p in pids], [_cpu_s(s.pid) for s in sims], _cpu_s(consumer.pid)
            udp_drops, elapsed = _udp_rcvbuf_errors() - udp0, time.monotonic() - t0
            m1 = await _scrape_all(http, metric_urls)
            stats = await (await http.get(curl + "/bench/stats")).json()
            split = [(await (await http.get(u + "/healthz")).json())["publishers"] for u in metric_urls]
            loaded = _memory(roles)
            peak = {role: _status_mb(pid, "VmHWM") for role, pid in roles.items()}
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
    delta = {k: v - m0.get(k, 0.0) for k, v in m1.items()}
    lat = np.array(stats["latency"]) * 1000 if stats["latency"] else np.array([np.nan])
    drops = {k.removeprefix("drop_"): int(v) for k, v in delta.items() if k.startswith("drop_") and v}
    return {
        "students": n,
        "workers": workers,
        "server_cpu_pct": round(100 * (sum(cpu1[0]) - sum(cpu0[0])) / elapsed, 1),
        "publisher_cpu_pct": round(100 * (sum(cpu1[1]) - sum(cpu0[1])) / elapsed, 1),
        "consumer_cpu_pct": round(100 * (cpu1[2] - cpu0[2]) / elapsed, 1),
        "video_fps_per_stream": round(delta.get("msg_video", 0.0) / elapsed / n, 2),
        "audio_chunks_per_s_per_stream": round(delta.get("msg_audio", 0.0) / elapsed / n, 2),
        "drops": drops | ({"kernel_udp": udp_drops} if udp_drops else {}),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 1),
        "server_rss_mb": round(sum(loaded.values()), 1),
        "rss_idle_mb": idle,
        "rss_loaded_mb": loaded,
        "rss_peak_mb": peak,
        "window_s": round(elapsed, 1),
        "publishers_per_worker": split,
    } | ({"tree": str(tree)} if tree is not None else {})


async def _main(args: argparse.Namespace) -> None:
    load1 = os.getloadavg()[0]
    print(f"ingest load: {args.seconds:.0f} s per run after {args.warmup:.0f} s warm-up; "
          f"{os.cpu_count()} cores; load average before start {load1:.2f}", flush=True)  # fmt: skip
    header = (
        f"{'N':>3} {'W':>2} {'server CPU%':>11} {'publ. CPU%':>10} {'fps/stream':>10} {'chunks/s':>8} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'RSS MB':>7}  drops"
    )
    print(header, flush=True)
    results = []
    media = args.media
    with tempfile.TemporaryDirectory(prefix="classpulse-bench-") as tmp:
        if media is None:
            from services.ingest.simulate import default_clip

            media = await asyncio.to_thread(default_clip, Path(tmp), seconds=20.0)
        for n in args.students:
            for workers in args.workers or [None]:
                for tree in args.trees or [None]:
                    load = os.getloadavg()[0]
                    if workers is None:
                        result = await _run_one(n, seconds=args.seconds, warmup=args.warmup, media=media)
                    else:
                        result = await _run_workers(
                            n, workers, seconds=args.seconds, warmup=args.warmup, media=media,
                            redis_url=_bench_redis(args.redis_url), kafka=args.kafka, tmp=Path(tmp),
                            tree=tree.resolve() if tree is not None else None,
                        )  # fmt: skip
                    results.append(result)
                    _print_row(result)
                    print(f"    (load average {load:.2f} before, {os.getloadavg()[0]:.2f} after)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _print_row(r: dict[str, object]) -> None:
    print(
        f"{r['students']!s:>3} {r.get('workers', '-')!s:>2} {r['server_cpu_pct']!s:>11} {r['publisher_cpu_pct']!s:>10} "
        f"{r['video_fps_per_stream']!s:>10} {r['audio_chunks_per_s_per_stream']!s:>8} {r['latency_p50_ms']!s:>7} "
        f"{r['latency_p95_ms']!s:>7} {r['server_rss_mb']!s:>7}  {r['drops'] or 'none'}"
        + (f"  (consumer CPU {r['consumer_cpu_pct']}%)" if "consumer_cpu_pct" in r else "")
        + (f"  (publishers per worker {r['publishers_per_worker']})" if "publishers_per_worker" in r else ""),
        flush=True,
    )
    if "rss_idle_mb" in r:
        idle, loaded, peak = r["rss_idle_mb"], r["rss_loaded_mb"], r["rss_peak_mb"]
        assert isinstance(idle, dict) and isinstance(loaded, dict) and isinstance(peak, dict)
        parts = [f"{role} {idle[role]:.0f} / {loaded[role]:.0f} / {peak[role]:.0f}" for role in idle]
        tree = f" [{r['tree']}]" if "tree" in r else ""
        print(f"    RSS MB idle / loaded / peak{tree}: " + "; ".join(parts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--students", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--media", type=Path, default=None, help="VP8/H.264 + Opus clip (default: synthetic)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=None,
        help="run each N with these worker counts through `classpulse ingest --workers W` on Redis + Kafka",
    )  # fmt: skip
    parser.add_argument(
        "--trees", type=Path, nargs="+", default=None,
        help="with --workers: run each N and W once per source tree (server from that tree), side by side",
    )  # fmt: skip
    parser.add_argument("--redis-url", default=os.environ.get("CLASSPULSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--kafka", default=os.environ.get("CLASSPULSE_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--consume", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    if args.trees and not args.workers:
        parser.error("--trees needs --workers (the runs through `classpulse ingest`)")
    if args.serve:
        asyncio.run(_serve(args.port))
    elif args.consume:
        asyncio.run(_consumer(args.consume, _MAXLEN))
    else:
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
