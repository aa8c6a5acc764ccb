"""End to end latency of ``classpulse up``: capture -> dashboard, next to bare WebRTC loopback.

    python -m bench.e2e_latency [--students 10 20 30] [--seconds 30] [--warmup 6] [--clip FILE.webm]
                                [--camera FPS:KBPS ...] [--up-env CLASSPULSE_INFERENCE_DEGRADE=false ...]

Every student relays the same clip: by default a webcam-like 640x360 VP8 + Opus clip made from
a real photo (:func:`shared.testkit.clips.write_webcam_clip`: sways, turns away, speaks),
generated once per run, at the frame rate and bitrate the join page asks a browser to send
(``--camera 5:400``; several, e.g. ``--camera 5:400 15:800``, run side by side).

For each student count, in one run and side by side:

* **webrtc alone**: an ingest-only server (WHIP + decode + sampling, memory transports,
  nothing else running) in this process; N simulated students (``classpulse simulate``,
  a separate process relaying pre-encoded VP8+Opus, so no publisher encodes) publish to
  it; latency = the moment a sampled video frame reaches the media stream minus its
  capture time (RTCP sender-report clock) — the WebRTC transport + decode floor.
* **end to end**: a ``classpulse up`` subprocess (ingest + inference + aggregation +
  gateway), the same N students, and a dashboard-like WebSocket viewer in this process;
  latency = receive time minus ``timing.capture_ts`` of every score message, and the share
  of each stage from its timing trail (capture -> ingest, ingest, -> inference, inference,
  -> gateway, gateway, -> viewer); scored steps per second of each student (the viewer's
  score messages per participant after the warm-up / the time measured), min and mean over
  the students; and from the server's ``/metrics`` at the end: media dropped by reason and
  the inference worker's target analysed fps; and where the server's CPU went after the warm-up:
  each server process's share of a core (``up`` and its ingest workers, from ``/proc``) and the
  inference engine's seconds per second by part (audio, perception, fusion; from ``/metrics``).

Messages of the first ``--warmup`` seconds (connection set-up, calibration) are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

SECRET = "bench-secret"
SESSION = "bench"
SEGMENTS = (
    "capture->ingest",
    "ingest",
    "ingest->inference",
    "inference",
    "inference->gateway",
    "gateway",
    "gateway->viewer",
)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")}
    env.update(CLASSPULSE_TOKEN_SECRET=SECRET, CLASSPULSE_LOG_LEVEL="WARNING")
    env.update(extra or {})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _classpulse(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args]


async def _wait_healthy(url: str, proc: asyncio.subprocess.Process, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                async with http.get(f"{url}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url} did not become healthy")


async def _simulate(url: str, students: int, seconds: float, clip: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *_classpulse(
            "simulate",
            "--session",
            SESSION,
            "--students",
            str(students),
            "--url",
            url,
            "--duration",
            str(seconds),
            "--media",
            str(clip),
        ),
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"simulate failed: {out.decode()[-500:]}")
    print("   ", out.decode().strip().splitlines()[-1], flush=True)


@dataclass
class Samples:
    latency: list[float] = field(default_factory=list)
    segments: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SEGMENTS})
    steps: dict[str, set[str]] = field(default_factory=dict)
    """Event ids of the scores per participant after the warm-up."""
    repeats: int = 0
    measured_s: float = 0.0
    dropped: dict[str, float] = field(default_factory=dict)
    target_fps: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    """Share of one core each server process used after the warm-up ("up", "ingest 0", ...)."""
    engine: dict[str, float] = field(default_factory=dict)
    """Engine seconds per second after the warm-up by part (audio, perception, fusion, total)."""

    def quantiles(self) -> tuple[float, float, int]:
        if not self.latency:
            return float("nan"), float("nan"), 0
        a = np.array(self.latency) * 1000
        return float(np.percentile(a, 50)), float(np.percentile(a, 95)), len(a)

    def step_rates(self, students: int) -> tuple[float, float]:
        """Scored steps per second per student: (min, mean); a student with no step counts as 0."""
        if self.measured_s <= 0:
            return float("nan"), float("nan")
        rates = [len(ids) / self.measured_s for ids in self.steps.values()]
        rates += [0.0] * max(0, students - len(rates))
        return min(rates), float(np.mean(rates))


def _scrape(text: str, out: Samples) -> None:
    """Media dropped by reason and the inference target fps from a Prometheus exposition."""
    for line in text.splitlines():
        if line.startswith("classpulse_media_dropped_total{"):
            labels, value = line.rsplit(" ", 1)
            reason = labels.split('reason="', 1)[1].split('"', 1)[0]
            out.dropped[reason] = out.dropped.get(reason, 0.0) + float(value)
        elif line.startswith("classpulse_inference_target_fps "):
            out.target_fps = float(line.split()[1])


def _engine_seconds(text: str) -> dict[str, float]:
    """``classpulse_inference_seconds_sum`` by part from a Prometheus exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith('classpulse_inference_seconds_sum{part="'):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('part="', 1)[1].split('"', 1)[0]] = float(value)
    return out


def _cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of ``pid`` ("up") and its children (ingest workers, by their ``--ingest-worker``)."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(p: int) -> float:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    out = {"up": used(pid)}
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        try:
            args = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            worker = args[args.index(b"--ingest-worker") + 1].decode() if b"--ingest-worker" in args else None
            name = child if worker is None else f"ingest {worker}"
            out[name] = used(int(child))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _segments(timing: dict[str, object], now: float, out: Samples) -> None:
    stages = {s["stage"]: s for s in timing["stages"]}  # type: ignore[index,union-attr,attr-defined]
    try:
        ing, inf, gw = stages["ingest"], stages["inference"], stages["gateway"]
    except KeyError:
        return
    cap = float(timing["capture_ts"])  # type: ignore[arg-type]
    values = (
        ing["received"] - cap,
        ing["emitted"] - ing["received"],
        inf["received"] - ing["emitted"],
        inf["emitted"] - inf["received"],
        gw["received"] - inf["emitted"],
        gw["emitted"] - gw["received"],
        now - gw["emitted"],
    )
    for name, value in zip(SEGMENTS, values, strict=True):
        out.segments[name].append(max(0.0, value))


async def end_to_end(students: int, seconds: float, warmup: float, clip: Path, up_env: dict[str, str]) -> Samples:
    from shared.tokens import issue_token

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        *_classpulse("up", "--port", str(port)),
        env=_env(up_env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    samples = Samples()
    try:
        await _wait_healthy(url, proc)
        token = issue_token(secret=SECRET, session=SESSION, participant="*", role="viewer")
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{url}/api/sessions/{SESSION}/ws", params={"token": token}, max_msg_size=0) as ws,
        ):
            sim = asyncio.create_task(_simulate(url, students, seconds, clip))
            start = time.time()
            first: float | None = None
            last = start
            while not sim.done():
                try:
                    msg = await ws.receive(timeout=0.5)
                except TimeoutError:
                    continue
                now = time.time()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                if data.get("kind") != "score" or now - start < warmup:
                    continue
                if first is None:
                    first = now
                    cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
                    async with http.get(f"{url}/metrics") as r:
                        engine0 = _engine_seconds(await r.text())
                last = now
                event = data["event"]
                timing = event["timing"]
                samples.latency.append(now - timing["capture_ts"])
                ids = samples.steps.setdefault(event["participant"], set())
                samples.repeats += event["event_id"] in ids
                ids.add(event["event_id"])
                _segments(timing, now, samples)
            samples.measured_s = last - (start + warmup) if first is not None else 0.0
            async with http.get(f"{url}/metrics") as r:
                text = await r.text()
                _scrape(text, samples)
            if first is not None:
                elapsed = time.monotonic() - t0
                cpu1, engine1 = _cpu_seconds(proc.pid), _engine_seconds(text)
                samples.cpu = {k: (v - cpu0.get(k, 0.0)) / elapsed for k, v in cpu1.items()}
                samples.engine = {k: (v - engine0.get(k, 0.0)) / elapsed for k, v in engine1.items()}
            await sim
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return samples


async def webrtc_alone(students: int, seconds: float, warmup: float, clip: Path) -> Samples:
    """WHIP ingest only, in this process; video frames' capture -> media stream latency."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from services.ingest.app import create_ingest_app
    from services.ingest.settings import IngestSettings
    from shared.contracts.codec import decode_media
    from shared.contracts.topics import INFERENCE_GROUP
    from shared.metrics import Metrics
    from shared.settings import CommonSettings
    from shared.transport.factory import build_transports

    common = CommonSettings(token_secret=SECRET)  # type: ignore[arg-type]
    metrics = Metrics(CollectorRegistry())
    transports = build_transports(common, metrics=metrics)
    app = create_ingest_app(settings=IngestSettings(), common=common, transports=transports, metrics=metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    samples = Samples()
    try:
        await transports.media.ensure_group(INFERENCE_GROUP)
        sim = asyncio.create_task(_simulate(url, students, seconds, clip))
        start = time.time()
        while not sim.done():
            entries = await transports.media.read_group(
                INFERENCE_GROUP, "bench", shards=range(transports.media.shards), count=256, block_ms=100
            )
            now = time.time()
            for entry in entries:
                msg = decode_media(entry.data)
                stamp = msg.timing.stage("ingest")
                if msg.kind == "video" and stamp is not None and now - start >= warmup:
                    samples.latency.append(stamp.emitted - msg.timing.capture_ts)
            if entries:
                await transports.media.ack(INFERENCE_GROUP, [e.id for e in entries])
        await sim
    finally:
        await runner.cleanup()
    return samples


def _webcam_clips(cameras: list[str], folder: Path) -> dict[str, Path]:
    """One webcam-like 640x360 clip per ``FPS:KBPS`` (a student's camera as the server receives it)."""
    from shared.testkit.clips import write_webcam_clip

    out = {}
    for spec in cameras:
        fps, _, kbps = spec.partition(":")
        path = folder / f"webcam-640x360-{fps}fps-{kbps or 800}k.webm"
        write_webcam_clip(path, seconds=20.0, fps=int(fps), video_kbps=int(kbps or 800))
        out[f"{fps} fps {kbps or 800} kbps"] = path
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, nargs="+", default=[10, 20, 30])
    parser.add_argument("--seconds", type=float, default=30.0, help="publishing time per case (default 30)")
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds left out at the start (default 6)")
    parser.add_argument("--clip", type=Path, default=None, help="VP8 + Opus clip to relay (default: webcam clip)")
    parser.add_argument(
        "--camera", nargs="+", default=["5:400"], metavar="FPS:KBPS",
        help="webcam clips to relay, side by side: frame rate and VP8 bitrate of what each student sends "
        "(default 5:400, what the join page asks a browser to send; '15:800' is a camera sent uncapped)",
    )
    parser.add_argument(
        "--up-env", nargs="*", default=[], metavar="KEY=VALUE", help="settings for the `classpulse up` server"
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[],
        metavar="LABEL:KEY=VALUE[,KEY=VALUE]",
        help="run `classpulse up` once per variant (side by side in one run), each with these settings on top of "
        "--up-env; e.g. 'one-process:CLASSPULSE_UP_INGEST_PROCESSES=0' 'two:CLASSPULSE_UP_INGEST_PROCESSES=2'",
    )
    parser.add_argument("--no-webrtc-alone", action="store_true", help="skip the bare WebRTC runs")
    args = parser.parse_args()
    up_env = dict(item.split("=", 1) for item in args.up_env)
    variants: list[tuple[str, dict[str, str]]] = []
    for spec in args.variants:
        label, _, pairs = spec.partition(":")
        variants.append((label, {**up_env, **dict(p.split("=", 1) for p in pairs.split(",") if p)}))
    variants = variants or [("up", up_env)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="classpulse-e2e-") as tmp:
        clips = {"clip": args.clip} if args.clip is not None else _webcam_clips(args.camera, Path(tmp))
        for n in args.students:
            for camera, clip in clips.items():
                base = Samples()
                if not args.no_webrtc_alone:
                    print(f"== {n} student(s), {camera}: webrtc alone (load average {os.getloadavg()[0]:.1f})",
                          flush=True)
                    base = asyncio.run(webrtc_alone(n, args.seconds, args.warmup, clip))
                for label, env in variants:
                    print(f"== {n} student(s), {camera}: classpulse up end to end, {label} "
                          f"(load average {os.getloadavg()[0]:.1f})", flush=True)
                    e2e = asyncio.run(end_to_end(n, args.seconds, args.warmup, clip, env))
                    rows.append((n, f"{camera} {label}", base, e2e))
    print()
    print(
        "students | variant | webrtc alone p50/p95 ms | capture->dashboard p50/p95 ms (n) | ratio p50 / p95 "
        "| steps/s per student min / mean | target fps | dropped (reason: count)"
    )
    for n, label, base, e2e in rows:
        b50, b95, _ = base.quantiles() if base.latency else (float("nan"), float("nan"), 0)
        e50, e95, count = e2e.quantiles()
        smin, smean = e2e.step_rates(n)
        drops = ", ".join(f"{k}: {v:.0f}" for k, v in sorted(e2e.dropped.items()) if v) or "none"
        if e2e.repeats:
            drops += f" ({e2e.repeats} repeated scores)"
        target = "?" if e2e.target_fps is None else f"{e2e.target_fps:g}"
        print(
            f"{n:>8} | {label} | {b50:8.1f} / {b95:8.1f}   | {e50:8.1f} / {e95:8.1f} ({count:>5})    | "
            f"{e50 / b50:5.2f} / {e95 / b95:5.2f} | {smin:5.2f} / {smean:5.2f} | {target:>6} | {drops}"
        )
    print()
    print("share of capture->dashboard (mean of each segment / mean total):")
    print("students | variant | " + " | ".join(SEGMENTS))
    for n, label, _, e2e in rows:
        means = {s: float(np.mean(v)) if v else 0.0 for s, v in e2e.segments.items()}
        total = sum(means.values()) or 1.0
        print(
            f"{n:>8} | {label} | "
            + " | ".join(f"{100 * means[s] / total:5.1f} % ({1000 * means[s]:.0f} ms)" for s in SEGMENTS)
        )
    print()
    print("where the server's CPU went after the warm-up (% of one core per process; the inference engine's "
          "seconds per second by part, wall time in its batches):")
    print("students | variant | server processes | engine audio / perception / fusion / total")
    for n, label, _, e2e in rows:
        procs = ", ".join(f"{k} {100 * v:.0f} %" for k, v in e2e.cpu.items()) or "?"
        eng = " / ".join(f"{e2e.engine.get(k, float('nan')):.2f}" for k in ("audio", "perception", "fusion", "total"))
        print(f"{n:>8} | {label} | {procs} | {eng}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
