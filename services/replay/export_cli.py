"""``classpulse export --session S --format csv|jsonl|parquet [--table ...] --out PATH``: a past live
session's tables (timeline, students, events) rebuilt from the Kafka log, the same columns as the gateway's
``GET /api/sessions/{s}/export``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="export a live session's timeline, students or events from the Kafka log")
    p.add_argument("--session", required=True, help="the live session's id")
    p.add_argument("--format", default="csv", choices=["csv", "jsonl", "parquet"])
    p.add_argument("--table", default="all", choices=["all", "timeline", "students", "events"],
                   help="one table (--out is the file), or all three (--out is a folder; default)")
    p.add_argument("--out", type=Path, default=None,
                   help="file (one table) or folder (all); default <session>-export/ or <session>-<table>.<format>")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default CLASSPULSE_KAFKA_BOOTSTRAP)")
    p.set_defaults(handler=_export)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _write(chunks: Any, path: Path) -> int:
    size = 0
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("wb") as f:
        for chunk in chunks:
            f.write(chunk)
            size += len(chunk)
    tmp.replace(path)
    return size


def _export(args: argparse.Namespace) -> int:
    import asyncio

    from services.replay.from_events import EventLogError, fetch_session_events, report_from_events
    from shared.contracts.events import Alert, LifecycleEvent, ScoreEvent
    from shared.contracts.interactions import InteractionEvent
    from shared.contracts.topics import ALERTS, INTERACTIONS, LIFECYCLE, SCORES
    from shared.export.tables import TABLES, build_table
    from shared.export.writers import write_table
    from shared.settings import CommonSettings

    common = CommonSettings()
    if common.log_level != "DEBUG":  # aiokafka logs connection errors itself; the user gets our one line
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    bootstrap = args.bootstrap or common.kafka_bootstrap

    async def fetch() -> tuple[Any, ...]:
        kw = {"bootstrap": bootstrap, "session": args.session}
        scores, _ = await fetch_session_events(topic=SCORES.name, model=ScoreEvent, **kw)
        life, _ = await fetch_session_events(topic=LIFECYCLE.name, model=LifecycleEvent, required=False, **kw)
        alerts, _ = await fetch_session_events(topic=ALERTS.name, model=Alert, required=False, **kw)
        said, _ = await fetch_session_events(topic=INTERACTIONS.name, model=InteractionEvent, required=False, **kw)
        return scores, life, alerts, said

    import time

    started = time.perf_counter()
    try:
        scores, life, alerts, said = asyncio.run(fetch())
        read_s = time.perf_counter() - started
        report = report_from_events(scores, session=args.session, source=f"kafka://{bootstrap}", lifecycle=life,
                                    interactions=said)
    except EventLogError as exc:
        return _fail(str(exc))
    rebuilt_s = time.perf_counter() - started - read_s
    tables = TABLES if args.table == "all" else (args.table,)
    if args.table == "all":
        folder = args.out or Path(f"{args.session}-export")
        paths = {t: folder / f"{args.session}-{t}.{args.format}" for t in tables}
    else:
        paths = {args.table: args.out or Path(f"{args.session}-{args.table}.{args.format}")}
    alerts_seen = list({a.event_id: a for a in alerts}.values())
    try:
        for table, path in paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            size = _write(write_table(build_table(table, report, alerts=alerts_seen), args.format), path)
            print(f"{path}  ({size:,} bytes)")
    except OSError as exc:
        return _fail(f"cannot write the export ({exc.strerror}); choose a writable place with --out")
    wrote_s = time.perf_counter() - started - read_s - rebuilt_s
    print(f"{len(scores):,} score events read in {read_s:.1f} s, report rebuilt in {rebuilt_s:.1f} s, "
          f"{len(paths)} table(s) written in {wrote_s:.1f} s")
    return 0
