"""``classpulse up``: the whole system in one process on one port (embedded memory transports)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "up", help="run ingest, inference, aggregation and gateway in one process on one port (embedded default)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free port)")
    p.set_defaults(handler=_up)


def _up(args: argparse.Namespace) -> int:
    import sys

    from pydantic import ValidationError

    from services.aggregator.settings import AggregatorSettings
    from services.core_commands import check_all_settings
    from services.gateway.serving import serve
    from services.gateway.settings import GatewaySettings
    from services.inference.settings import InferenceSettings
    from services.ingest.settings import IngestSettings
    from services.up.app import UpSettings, create_up_app
    from shared.log import setup_logging
    from shared.metrics import default_metrics
    from shared.settings import CommonSettings, SettingsError

    if not 0 <= args.port <= 65535:
        print("error: --port must be between 0 and 65535", file=sys.stderr)
        return 2
    try:
        check_all_settings()
        settings = UpSettings(
            common=CommonSettings(),
            gateway=GatewaySettings(),
            ingest=IngestSettings(),
            inference=InferenceSettings(),
            aggregator=AggregatorSettings(),
        )
    except (SettingsError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    common = settings.common
    if common.transport != "memory":
        print(
            "error: `classpulse up` runs on memory transports; unset CLASSPULSE_TRANSPORT, or run the services "
            "separately (classpulse ingest|inference|aggregator|gateway)",
            file=sys.stderr,
        )
        return 2
    setup_logging(level=common.log_level, json_lines=common.log_json, redact_pii=common.log_redact_pii)
    app = create_up_app(settings=settings, metrics=default_metrics())
    try:
        asyncio.run(
            serve(
                app,
                host=args.host,
                port=args.port,
                banner=lambda url: f"ClassPulse is up: {url}/  (join: /join, dashboard: /dashboard)",
            )
        )
    except OSError as exc:
        print(
            f"error: cannot serve on {args.host}:{args.port} ({exc.strerror}); choose another --port", file=sys.stderr
        )
        return 1
    return 0
