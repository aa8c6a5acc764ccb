"""``classpulse gateway``: REST, live feeds and the teacher dashboard as one service."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("gateway", help="serve the REST API, live WebSocket/SSE feeds and the teacher dashboard")
    p.add_argument("--host", default=None, help="address to listen on (default: CLASSPULSE_GATEWAY_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: CLASSPULSE_GATEWAY_PORT, 8080)")
    p.add_argument("--check-config", action="store_true", help="validate the settings, print them and exit")
    p.set_defaults(handler=_gateway)


def _gateway(args: argparse.Namespace) -> int:
    from services.gateway.service import serve_gateway
    from services.gateway.settings import GatewaySettings
    from shared.service import run_service

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    return run_service(
        "gateway", settings=lambda _: GatewaySettings(**overrides), main=serve_gateway, check_config=args.check_config,
        listens_on=lambda settings: settings.host,
    )
