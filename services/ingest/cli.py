"""``classpulse ingest`` (standalone WHIP ingest) and ``classpulse simulate`` (load/demo publishers)."""

from __future__ import annotations

import argparse
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
    p.add_argument("--check-config", action="store_true", help="validate the settings, print them and exit")
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
    p.add_argument("--check-config", action="store_true", help="validate the settings, print them and exit")
    p.set_defaults(handler=_simulate)


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
    from services.ingest.service import IngestPlan, serve_ingest
    from services.ingest.settings import IngestSettings
    from shared.service import EXIT_BAD_SETTINGS, ServiceError, run_service
    from shared.settings import CommonSettings

    def plan(common: CommonSettings) -> IngestPlan:
        settings = IngestSettings()
        workers = _worker_count(str(settings.workers if args.workers is None else args.workers))
        if workers is None:
            raise ServiceError("--workers must be a number from 1 to 64 or 'auto'", code=EXIT_BAD_SETTINGS)
        if args.worker_index is not None and args.runtime_dir is None:
            raise ServiceError(
                "--worker-index needs --runtime-dir (workers are started by --workers N)", code=EXIT_BAD_SETTINGS
            )
        if args.worker_index is None and workers > 1 and common.transport == "memory":
            raise ServiceError(
                f"{workers} ingest workers need a shared media transport; set CLASSPULSE_TRANSPORT=distributed "
                "(Redis + Kafka) or use --workers 1",
                code=EXIT_BAD_SETTINGS,
            )
        return IngestPlan(
            settings=settings,
            host=args.host or settings.host,
            port=settings.port if args.port is None else args.port,
            workers=workers,
            worker_index=args.worker_index,
            runtime_dir=args.runtime_dir,
        )

    # Ingest never imports torch (audio is resampled by FFmpeg through PyAV), so there is no
    # torch thread count to set: the default Runtime keeps it that way.
    return run_service(
        "ingest", settings=plan, main=serve_ingest, check_config=args.check_config,
        listens_on=None if args.worker_index is not None else (lambda p: p.host),  # workers: checked by their parent
    )


def _simulate(args: argparse.Namespace) -> int:
    from services.ingest.simulate import SimulationError, run_simulation
    from shared.service import EXIT_BAD_SETTINGS, ServiceContext, ServiceError, run_service
    from shared.settings import CommonSettings

    def settings(common: CommonSettings) -> CommonSettings:
        if not 1 <= args.students <= 500:
            raise ServiceError("--students must be between 1 and 500", code=EXIT_BAD_SETTINGS)
        return common

    async def simulate(common: CommonSettings, _: ServiceContext) -> int:
        try:
            report = await run_simulation(
                base_url=args.url,
                session=args.session,
                students=args.students,
                media=args.media,
                duration_s=args.duration or None,
                prefix=args.prefix,
                secret=common.token_keyring(),
            )
        except SimulationError as exc:
            raise ServiceError(str(exc)) from exc
        print(report.summary())
        return 0 if report.connected == args.students else 1

    return run_service("simulate", settings=settings, main=simulate, check_config=args.check_config)
