"""Webhooks: the endpoints platforms register and the signed JSON the gateway delivers to them.

Producer: services.gateway (its webhook delivery loop). Consumers: classroom platforms' backends.
Public contract (docs/integration.md#webhooks); keys may be added, the documented ones never change
meaning. JSON Schema of the payload: ``deploy/schemas/classpulse.webhook.schema.json``.

Every delivery is a POST of a :class:`WebhookPayload` with three headers:

* ``ClassPulse-Webhook-Id``: the delivery id, the same on every retry (the idempotency key);
* ``ClassPulse-Webhook-Timestamp``: Unix seconds when this attempt was signed;
* ``ClassPulse-Webhook-Signature``: ``v1=`` + hex HMAC-SHA256(endpoint secret, ``"{timestamp}.{body}"``).

Receivers recompute the signature over the raw body, compare in constant time and reject a timestamp
more than a few minutes old (a replay); they dedupe on the delivery id.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.events import Alert
from shared.contracts.report import Report

WebhookEvent = Literal["session.ended", "alert.raised"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("session.ended", "alert.raised")
WEBHOOK_KEYS = "classpulse:webhooks"
"""Prefix of the webhook store's Redis keys; a session's own start ``{WEBHOOK_KEYS}:session:{s}:`` (erasure)."""
ID_HEADER = "ClassPulse-Webhook-Id"
TIMESTAMP_HEADER = "ClassPulse-Webhook-Timestamp"
SIGNATURE_HEADER = "ClassPulse-Webhook-Signature"
EVENT_HEADER = "ClassPulse-Webhook-Event"


class WebhookEndpoint(BaseModel):
    """A registered receiver (listed without its secret)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    url: str = Field(description="http(s) URL the deliveries are POSTed to.")
    events: list[WebhookEvent] = Field(description="What it receives: session.ended, alert.raised.")
    scope: Literal["session", "deployment"] = Field(description="One session's events, or every session's.")
    session: str | None = Field(default=None, description="The session of a session-scoped endpoint.")
    description: str = Field(default="", max_length=500)
    created: float = Field(description="Registration time (epoch s).")


class WebhookEndpointCreated(WebhookEndpoint):
    """The registration answer: the endpoint with its signing secret (shown this once)."""

    secret: str = Field(description="HMAC-SHA256 key of the signature header; store it, it is not shown again.")


class WebhookPayload(BaseModel):
    """The JSON body of one delivery."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    id: str = Field(description="Delivery id (also the ClassPulse-Webhook-Id header): dedupe on it.")
    event: WebhookEvent
    session: str
    created: float = Field(description="When the delivery was created (epoch s); retries keep it.")
    report: Report | None = Field(
        default=None,
        description="session.ended: the session's report (replay report contract) with its attendance; the "
        "per-second timeline is left out unless the gateway sets webhook_timeline (fetch it with /export).",
    )
    alert: Alert | None = Field(default=None, description="alert.raised: the alert.")


class DeadLetter(BaseModel):
    """A delivery given up after its last attempt (the bounded dead-letter record; no payload kept)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Delivery id.")
    endpoint: str = Field(description="Endpoint id.")
    url: str
    session: str
    event: WebhookEvent
    attempts: int = Field(ge=1)
    last_error: str = Field(description="Why the last attempt failed: 'http 500', 'timeout', 'connection refused'.")
    created: float
    failed_at: float
