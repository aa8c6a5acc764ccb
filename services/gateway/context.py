"""What the gateway's handlers share: transports, history, live hub, settings (one object per app)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from services.gateway.history import SessionHistory
from services.gateway.hub import LiveHub
from shared.metrics import Metrics
from shared.transport.base import LiveBus


@dataclass
class GatewayContext:
    live: LiveBus
    hub: LiveHub
    history: SessionHistory
    metrics: Metrics
    token_secret: str
    heartbeat_s: float


GATEWAY: web.AppKey[GatewayContext] = web.AppKey("classpulse_gateway", GatewayContext)
