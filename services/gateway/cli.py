"""``classpulse gateway``: REST, live feeds and the teacher dashboard as one service."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("gateway", help="serve the REST API, live WebSocket/SSE feeds and the teacher dashboard")
    p.add_argument("--host", default=None, help="address to listen on (default: CLASSPULSE_GATEWAY_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: CLASSPULSE_GATEWAY_PORT, 8080)")
    p.set_defaults(handler=_gateway)


def _gateway(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from pydantic import ValidationError

    from services.core_commands import check_all_settings
    from services.gateway.app import create_gateway_app
    from services.gateway.serving import serve
    from services.gateway.settings import GatewaySettings
    from shared.log import get_logger, setup_logging
    from shared.metrics import default_metrics
    from shared.settings import CommonSettings, SettingsError
    from shared.transport.factory import build_transports

    try:
        check_all_settings()
        common = CommonSettings()
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        settings = GatewaySettings(**overrides)
    except (SettingsError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(level=common.log_level, json_lines=common.log_json, redact_pii=common.log_redact_pii)
    if common.transport == "memory":
        get_logger(__name__).warning(
            "gateway transport %s: it sees no other process; run `classpulse up`, or set CLASSPULSE_TRANSPORT="
            "distributed to read Redis + Kafka",
            common.transport,
        )
    metrics = default_metrics()
    transports = build_transports(common, metrics=metrics, client_id="classpulse-gateway")
    app = create_gateway_app(settings=settings, common=common, transports=transports, metrics=metrics)
    try:
        asyncio.run(
            serve(
                app,
                host=settings.host,
                port=settings.port,
                banner=lambda url: f"gateway listening on {url}/  (dashboard: /dashboard, API: /api/openapi.json)",
            )
        )
    except OSError as exc:
        print(
            f"error: cannot serve on {settings.host}:{settings.port} ({exc.strerror}); choose another --port",
            file=sys.stderr,
        )
        return 1
    return 0
