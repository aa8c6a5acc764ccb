"""The faults of issue 13 on real Redis, Kafka and service processes: one table row per fault.

    python -m bench.faults [--faults redis_pause kafka_pause ...] [--json results.json] [--keep DIR]

Each fault runs on a fresh stack (``classpulse ingest``, two ``classpulse inference`` workers,
``classpulse aggregator``, ``classpulse gateway``, 3 students from ``classpulse simulate``) on a
private Redis + Kafka started for this run (``shared.testkit.fault_stack``); the figures are read
back from the topics from the start (``shared.testkit.fault_report``). Prints a Markdown table
(the one in docs/benchmarks.md, section "Faults") and, with ``--json``, every report.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from shared.testkit.fault_report import FaultReport
from shared.testkit.fault_scenarios import DESCRIPTIONS, FAULTS, make_media, run_fault
from shared.testkit.fault_stack import Brokers

SERVICES = ("ingest", "w1", "w2", "aggregator", "gateway")


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def row(r: FaultReport) -> str:
    health = " / ".join(_s(r.healthy_after_s.get(n)) for n in SERVICES)
    resumed = " / ".join(_s(r.resumed_after_s.get(n)) for n in ("inference", "aggregator", "gateway"))
    dups = f"{r.duplicates} ({r.conflicting_ids} differ)"
    exits = ",".join(f"{n}={c}" for n, c in r.exit_codes.items() if c != 0) or "all 0"
    if r.forced_stops:
        exits += f" ({','.join(r.forced_stops)} forced)"
    alerts = len(r.false_alerts)
    return (f"| {DESCRIPTIONS[r.fault]} | {health} | {resumed} | {r.frames_in} / {r.frames_scored} / "
            f"{r.dropped_counted} / {r.frames_lost} | {r.scores} / {r.gateway_scores} | {dups} | {r.windows_missing} "
            f"| {alerts} | {r.gateway_left or '-'} | {exits} |")


HEADER = (
    "| fault | healthy again after, s (ingest / w1 / w2 / aggregator / gateway) | output resumed after, s "
    "(inference / aggregator / gateway) | frames in / scored / drops counted / lost | scores on topic / "
    "kept by gateway | duplicate records (values differ) | 1 s windows missing | false away/camera_off "
    "| gateway shows left | exit on SIGTERM |\n|---|---|---|---|---|---|---|---|---|---|"
)


async def main_async(args: argparse.Namespace) -> list[FaultReport]:
    with tempfile.TemporaryDirectory(prefix="classpulse-faults-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        brokers = Brokers(run_dir=folder / "brokers", redis_port=args.redis_port, kafka_port=args.kafka_port)
        await asyncio.to_thread(brokers.start)
        reports: list[FaultReport] = []
        try:
            media = await asyncio.to_thread(make_media, folder)
            for name in args.faults:
                t0 = time.monotonic()
                try:
                    report = await run_fault(name, brokers=brokers, folder=folder, media=media)
                except RuntimeError as exc:  # the stack did not come up (a very busy box): say so, go on
                    print(f"{name}: not run: {exc}", flush=True)
                    continue
                reports.append(report)
                print(f"{name}: {time.monotonic() - t0:.0f} s; {report.notes} {report.false_alerts[:6]}", flush=True)
                print(row(report), flush=True)
                for who, runs in report.timelines.items():
                    print(f"  steps of {who}: {runs}", flush=True)
                if args.json:
                    await asyncio.to_thread(_write_json, Path(args.json), reports)
        finally:
            await asyncio.to_thread(brokers.stop)
        return reports


def _write_json(path: Path, reports: list[FaultReport]) -> None:
    path.write_text(json.dumps([dataclasses.asdict(r) for r in reports], indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", nargs="+", choices=["baseline", *FAULTS], default=["baseline", *FAULTS])
    parser.add_argument("--json", default=None, help="also write every report as JSON to this file")
    parser.add_argument("--keep", default=None, help="keep logs and broker data in this folder")
    parser.add_argument("--redis-port", type=int, default=0, help="private Redis port (default: a free one)")
    parser.add_argument("--kafka-port", type=int, default=0, help="private Kafka port (+1: controller; default: free)")
    args = parser.parse_args()
    reports = asyncio.run(main_async(args))
    print(HEADER)
    for r in reports:
        print(row(r))


if __name__ == "__main__":
    main()
