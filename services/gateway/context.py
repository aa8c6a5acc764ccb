"""What the gateway's handlers share: transports, history, live hub, settings (one object per app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from services.gateway.history import SessionHistory
from services.gateway.hub import LiveHub
from shared.metrics import Metrics
from shared.privacy.store import MemoryPrivacyStore
from shared.privacy.view import PrivacyView
from shared.text.settings import TextSettings
from shared.text.stage import TextStage
from shared.tokens import Secret
from shared.transport.base import EventBus, LiveBus


@dataclass
class GatewayContext:
    live: LiveBus
    hub: LiveHub
    history: SessionHistory
    metrics: Metrics
    token_secret: Secret
    """The keyring tokens are checked against (a plain secret: one key; tests)."""
    heartbeat_s: float
    events: EventBus | None = None
    """Where accepted interaction events are published (None: the route answers 503)."""
    keep_text: bool = False
    """CLASSPULSE_KEEP_TEXT: forward raw chat text (else only derived features)."""
    max_viewers_per_session: int = 100
    """Open live feeds (WebSocket + SSE) per session; one more gets 429."""
    viewer_write_timeout_s: float = 10.0
    """An SSE viewer whose write does not complete in this time (it stopped reading) is dropped."""
    viewers: dict[str, int] = field(default_factory=dict)
    """Open live feeds per session (slots taken before the feed is opened)."""
    interactions_max_items: int = 500
    interactions_max_bytes: int = 1_048_576
    text: TextStage = field(default_factory=lambda: TextStage(settings=TextSettings(relevance="off"), encoder=None))
    """The text stage: derived features (question, words, on-topic relevance) before anything is published."""
    privacy: PrivacyView = field(default_factory=lambda: PrivacyView(MemoryPrivacyStore()))
    """Session privacy policies (opt-outs, aggregate-only): the store every service reads, cached."""
    retention_s: int = 7 * 24 * 3600
    """CLASSPULSE_RETENTION_S: what an erasure answer says about data left to expire."""


GATEWAY: web.AppKey[GatewayContext] = web.AppKey("classpulse_gateway", GatewayContext)
