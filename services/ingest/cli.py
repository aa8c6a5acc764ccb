"""``classpulse ingest`` (standalone WHIP ingest) and ``classpulse simulate`` (load/demo publishers)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("ingest", help="run the WHIP ingest service (join page, /whip, /metrics) on its own")
    p.add_argument("--host", default=None, help="address to bind (default: CLASSPULSE_INGEST_HOST)")
    p.add_argument("--port", type=int, default=None, help="port to bind (default: CLASSPULSE_INGEST_PORT)")
    p.add_argument(
        "--workers",
        default=None,
        help="worker processes sharing the port: a number or 'auto' (= cores); >1 needs "
        "CLASSPULSE_TRANSPORT=distributed (default: CLASSPULSE_INGEST_WORKERS)",
    )
    p.add_argument(
        "--runtime-dir", type=Path, default=None, help="folder for the workers' registry (default: a fresh temp folder)"
    )
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)  # set by the supervisor
    p.set_defaults(handler=_ingest)

    p = sub.add_parser(
        "simulate", help="publish N simulated students over WHIP (pre-encoded media, no re-encoding) for load and demos"
    )
    p.add_argument("--session", required=True, help="session id to publish into")
    p.add_argument("--students", type=int, default=1, help="number of publishers (default 1)")
    p.add_argument("--media", type=Path, default=None, help="VP8/H.264 + Opus file to relay (default: synthetic clip)")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="base URL of the ingest server")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to publish (default: until Ctrl-C)")
    p.add_argument("--prefix", default="student", help="participant ids are PREFIX-1 .. PREFIX-N")
    p.set_defaults(handler=_simulate)


def _load_settings() -> tuple[Any, Any] | None:
    from pydantic import ValidationError

    from services.ingest.settings import IngestSettings
    from shared.settings import CommonSettings, SettingsError, check_environment

    try:
        check_environment()
        return IngestSettings(), CommonSettings()
    except (SettingsError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _worker_count(value: str) -> int | None:
    import os

    if value == "auto":
        return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        return None
    return count if 1 <= count <= 64 else None


def _ingest(args: argparse.Namespace) -> int:
    from shared.log import setup_logging

    loaded = _load_settings()
    if loaded is None:
        return 2
    settings, common = loaded
    setup_logging(level=common.log_level, json_lines=common.log_json, redact_pii=common.log_redact_pii)
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    workers = _worker_count(str(settings.workers if args.workers is None else args.workers))
    if workers is None:
        print("error: --workers must be a number from 1 to 64 or 'auto'", file=sys.stderr)
        return 2
    if args.worker_index is not None:
        return _worker(args, settings, common, host=host, port=port)
    if workers > 1:
        return _supervise(args, common, workers=workers, host=host, port=port)
    return _single_process(settings, common, host=host, port=port)


def _single_process(settings: Any, common: Any, *, host: str, port: int) -> int:
    from aiohttp import web

    from services.ingest.app import create_ingest_app
    from services.ingest.sampling import single_threaded_torch
    from shared.metrics import default_metrics
    from shared.transport.factory import build_transports

    single_threaded_torch()
    metrics = default_metrics()
    transports = build_transports(common, metrics=metrics, client_id="classpulse-ingest")
    app = create_ingest_app(settings=settings, common=common, transports=transports, metrics=metrics)
    try:
        web.run_app(app, host=host, port=port, print=lambda _: print(f"ingest listening on http://{host}:{port}/join"))
    except OSError as exc:
        print(f"error: cannot serve on {host}:{port} ({exc.strerror}); choose another --port", file=sys.stderr)
        return 1
    return 0


def _supervise(args: argparse.Namespace, common: Any, *, workers: int, host: str, port: int) -> int:
    from services.ingest.supervisor import SupervisorError, WorkerSupervisor

    if common.transport == "memory":
        print(
            f"error: {workers} ingest workers need a shared media transport; set CLASSPULSE_TRANSPORT=distributed "
            "(Redis + Kafka) or use --workers 1",
            file=sys.stderr,
        )
        return 2
    try:
        supervisor = WorkerSupervisor(workers=workers, host=host, port=port, runtime_dir=args.runtime_dir)
    except SupervisorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return supervisor.run()


def _worker(args: argparse.Namespace, settings: Any, common: Any, *, host: str, port: int) -> int:
    import asyncio

    from services.ingest.sampling import single_threaded_torch
    from services.ingest.worker import WorkerIdentity, create_worker_app, serve_worker
    from shared.metrics import default_metrics
    from shared.transport.factory import build_transports

    if args.runtime_dir is None:
        print("error: --worker-index needs --runtime-dir (workers are started by --workers N)", file=sys.stderr)
        return 2
    single_threaded_torch()
    identity = WorkerIdentity(index=args.worker_index, runtime_dir=args.runtime_dir)
    metrics = default_metrics()
    transports = build_transports(common, metrics=metrics, client_id=f"classpulse-ingest-{args.worker_index}")
    app = create_worker_app(identity=identity, settings=settings, common=common, transports=transports, metrics=metrics)
    try:
        asyncio.run(serve_worker(app=app, identity=identity, host=host, port=port))
    except OSError as exc:
        print(f"error: ingest worker cannot serve on {host}:{port} ({exc.strerror})", file=sys.stderr)
        return 1
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import asyncio

    from services.ingest.simulate import SimulationError, run_simulation
    from shared.log import setup_logging

    loaded = _load_settings()
    if loaded is None:
        return 2
    _, common = loaded
    setup_logging(level=common.log_level, json_lines=common.log_json, redact_pii=common.log_redact_pii)
    if not 1 <= args.students <= 500:
        print("error: --students must be between 1 and 500", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(
            run_simulation(
                base_url=args.url,
                session=args.session,
                students=args.students,
                media=args.media,
                duration_s=args.duration or None,
                prefix=args.prefix,
                secret=common.token_secret.get_secret_value(),
            )
        )
    except SimulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0 if report.connected == args.students else 1
