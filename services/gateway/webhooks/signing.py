"""The webhook signature (docs/integration.md#verifying-a-delivery): HMAC-SHA256 over ``"{timestamp}.{body}"``."""

from __future__ import annotations

import hashlib
import hmac
import secrets

SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300.0


def new_secret() -> str:
    """A fresh endpoint secret (256 random bits)."""
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``ClassPulse-Webhook-Signature`` header value of ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SCHEME}={mac}"


def verify(
    secret: str,
    *,
    timestamp: str,
    signature_header: str,
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when the header signs ``body`` at ``timestamp`` and the timestamp is within ``tolerance_s`` of ``now``."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance_s:
        return False
    expected = signature(secret, ts, body)
    return any(hmac.compare_digest(expected, part.strip()) for part in signature_header.split(","))
