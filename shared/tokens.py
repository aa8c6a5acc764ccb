"""Signed bearer tokens that scope a publisher or viewer to one session and role.

Format: ``base64url(json claims) "." base64url(HMAC-SHA256(secret, claims part))``.
Claims: ``sid`` session, ``pid`` participant (``*`` for viewers and platforms), ``role``, ``exp``.

Roles: ``student`` and ``teacher`` publish their own media; ``teacher`` and ``viewer`` view the
session; ``platform`` (the classroom product's backend) posts interaction events for anyone in
the session, as a teacher may; a student posts interactions only as itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Literal

TokenRole = Literal["student", "teacher", "viewer", "platform"]
ROLES: tuple[TokenRole, ...] = ("student", "teacher", "viewer", "platform")
PARTICIPANT_ROLES: tuple[TokenRole, ...] = ("student", "teacher")
"""Roles whose token names one participant (the others carry ``*``)."""
DEFAULT_TTL_S = 12 * 3600


class TokenError(Exception):
    """A token was missing, malformed, expired or out of scope. ``status`` is the HTTP code."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Claims:
    session: str
    participant: str
    role: TokenRole
    expires: float

    def can_publish(self, session: str, participant: str) -> bool:
        return self.role in ("student", "teacher") and self.session == session and self.participant == participant

    def can_view(self, session: str) -> bool:
        return self.role in ("teacher", "viewer") and self.session == session

    def can_post_interaction(self, session: str, participant: str) -> bool:
        """Students as themselves; teachers and platforms for anyone in their session."""
        if self.session != session:
            return False
        if self.role == "student":
            return self.participant == participant
        return self.role in ("teacher", "platform")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(
    *,
    secret: str,
    session: str,
    participant: str,
    role: TokenRole,
    ttl_s: float = DEFAULT_TTL_S,
    now: float | None = None,
) -> str:
    """Sign a token for one session, participant and role."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not session or not participant:
        raise ValueError("session and participant must not be empty")
    issued = time.time() if now is None else now
    claims = {"sid": session, "pid": participant, "role": role, "exp": int(issued + ttl_s)}
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    sig = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(sig)}"


def verify_token(token: str, *, secret: str, now: float | None = None) -> Claims:
    """Check signature and expiry; raises :class:`TokenError` (401) when either fails."""
    try:
        body, sig = token.split(".")
        expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(sig)):
            raise TokenError("token signature is invalid; ask for a new token with `classpulse token`", status=401)
        data = json.loads(_unb64(body))
        claims = Claims(
            session=str(data["sid"]), participant=str(data["pid"]), role=data["role"], expires=float(data["exp"])
        )
    except TokenError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenError("token is malformed; expected a token printed by `classpulse token`", status=401) from exc
    if claims.role not in ROLES:
        raise TokenError("token has an unknown role", status=401)
    if (time.time() if now is None else now) >= claims.expires:
        raise TokenError("token has expired; ask for a new token with `classpulse token`", status=401)
    return claims


def bearer(header: str | None) -> str:
    """The token from an ``Authorization: Bearer ...`` header; 401 when absent."""
    if not header:
        raise TokenError("missing Authorization header; send 'Authorization: Bearer <token>'", status=401)
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise TokenError("Authorization header must be 'Bearer <token>'", status=401)
    return value.strip()
