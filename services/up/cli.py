"""``classpulse up``: the whole system in one process on one port (embedded memory transports)."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.up.app import UpSettings
    from shared.settings import CommonSettings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "up", help="run ingest, inference, aggregation and gateway in one process on one port (embedded default)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free port)")
    p.add_argument("--check-config", action="store_true", help="validate the settings, print them and exit")
    # An ingest process of `up` (started by up itself, see services/up/ingest_pool.py):
    p.add_argument("--ingest-worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--runtime-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.set_defaults(handler=_up)


def _settings(common: CommonSettings) -> UpSettings:
    from services.aggregator.settings import AggregatorSettings
    from services.gateway.lti.settings import LtiSettings
    from services.gateway.settings import GatewaySettings
    from services.inference.settings import InferenceSettings
    from services.inference.transcribe.settings import TranscribeSettings
    from services.ingest.settings import IngestSettings
    from services.up.app import UpSettings
    from services.up.settings import UpProcessSettings
    from shared.service import EXIT_BAD_SETTINGS, ServiceError
    from shared.text.settings import TextSettings

    settings = UpSettings(
        common=common,
        gateway=GatewaySettings(),
        ingest=IngestSettings(),
        inference=InferenceSettings(),
        aggregator=AggregatorSettings(),
        up=UpProcessSettings(),
        text=TextSettings(),
        transcribe=TranscribeSettings(),
        lti=LtiSettings(),
    )
    if common.transport != "memory":
        raise ServiceError(
            "`classpulse up` runs on memory transports; unset CLASSPULSE_TRANSPORT, or run the services "
            "separately (classpulse ingest|inference|aggregator|gateway)",
            code=EXIT_BAD_SETTINGS,
        )
    return settings


def _up(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        print("error: --port must be between 0 and 65535", file=sys.stderr)
        return 2
    if args.ingest_worker is not None:
        return _ingest_worker(args)  # before importing the whole app: an ingest process never loads torch
    from services.up.service import serve_up
    from shared.service import run_service

    return run_service(
        "up", settings=_settings, main=functools.partial(serve_up, host=args.host, port=args.port),
        check_config=args.check_config, listens_on=lambda _: str(args.host),
    )


def _ingest_worker(args: argparse.Namespace) -> int:
    """One of `up`'s ingest processes: WebRTC receive, media relayed to the main process."""
    from services.ingest.settings import IngestSettings
    from services.up.ingest_worker import serve_ingest_worker
    from shared.service import EXIT_BAD_SETTINGS, ServiceError, run_service

    if args.runtime_dir is None:
        raise SystemExit("error: --ingest-worker needs --runtime-dir (up starts its ingest processes itself)")

    def settings(common: CommonSettings) -> IngestSettings:
        if common.transport != "memory":
            raise ServiceError("`classpulse up` runs on memory transports", code=EXIT_BAD_SETTINGS)
        return IngestSettings()

    main = functools.partial(
        serve_ingest_worker, index=args.ingest_worker, runtime_dir=args.runtime_dir, port=args.port
    )
    return run_service(f"up-ingest-{args.ingest_worker}", settings=settings, main=main)
