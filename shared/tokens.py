"""Bearer tokens that scope a publisher or viewer to one session and role: JWT (RFC 7519) via PyJWT.

A token is a compact JWS, HS256 by default, with the key id in its header (``kid``) and these claims:
``sid`` session, ``sub`` participant (``*`` for viewers and platforms), ``role``, ``iat`` issued at,
``exp`` expiry. A platform's backend may mint them itself with any JWT library and the same secret
(``jwt.encode({...}, secret, algorithm="HS256", headers={"kid": key_id})``).

Keys: a :class:`Keyring` signs with its current key and accepts the current and one previous key,
each named by its key id, so a secret is rotated without logging anyone out (docs/operations.md).
A token whose lifetime (``exp - iat``) is longer than the keyring's bound, whose ``iat`` lies in the
future, or that was issued before the keyring's ``revoked_before`` cut-off is refused.

Roles: ``student`` and ``teacher`` publish their own media; ``teacher`` and ``viewer`` view the
session; ``platform`` (the classroom product's backend) posts interaction events for anyone in
the session, as a teacher may; a student posts interactions only as itself.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import jwt

TokenRole = Literal["student", "teacher", "viewer", "platform"]
ROLES: tuple[TokenRole, ...] = ("student", "teacher", "viewer", "platform")
PARTICIPANT_ROLES: tuple[TokenRole, ...] = ("student", "teacher")
"""Roles whose token names one participant (the others carry ``*``)."""
DEFAULT_TTL_S = 12 * 3600
DEFAULT_MAX_TTL_S = 24 * 3600
ALGORITHM = "HS256"
LEEWAY_S = 30.0
"""Clock skew tolerated between the issuer and this server for ``iat`` (slightly ahead); ``exp`` is exact."""
MIN_SECRET_CHARS = 32
"""RFC 7518 §3.2: an HS256 key has at least 256 bits. Shorter secrets are refused beyond loopback
(:func:`shared.security.check_token_secret`), so PyJWT's own per-call warning is not needed."""
_REQUIRED = ["exp", "iat", "sid", "sub", "role"]
warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)


class TokenError(Exception):
    """A token was missing, malformed, expired or out of scope. ``status`` is the HTTP code."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def key_id_of(secret: str) -> str:
    """The default key id of a secret: a short hash (names the key in logs and headers, reveals nothing usable)."""
    return "k" + hashlib.sha256(b"classpulse-kid:" + secret.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class TokenKey:
    key_id: str
    secret: str


@dataclass(frozen=True)
class Keyring:
    """The signing key, an optional previous key still accepted, and the bound on token lifetimes."""

    current: TokenKey
    previous: TokenKey | None = None
    max_ttl_s: float = DEFAULT_MAX_TTL_S
    revoked_before: float = 0.0
    """Tokens issued (``iat``) before this unix time are refused: revokes every older token at once."""

    @classmethod
    def of(cls, secret: str, *, key_id: str = "", max_ttl_s: float = DEFAULT_MAX_TTL_S) -> Keyring:
        return cls(current=TokenKey(key_id or key_id_of(secret), secret), max_ttl_s=max_ttl_s)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return (self.current.key_id,) + ((self.previous.key_id,) if self.previous else ())

    def key(self, key_id: str) -> TokenKey | None:
        for key in (self.current, self.previous):
            if key is not None and key.key_id == key_id:
                return key
        return None


Secret = str | Keyring
"""What callers pass as ``secret``: a plain secret (one key, default bounds) or a :class:`Keyring`."""


def keyring(secret: Secret) -> Keyring:
    return secret if isinstance(secret, Keyring) else Keyring.of(secret)


@dataclass(frozen=True)
class Claims:
    session: str
    participant: str
    role: TokenRole
    expires: float
    issued: float = 0.0
    key_id: str = ""

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


def issue_token(
    *,
    secret: Secret,
    session: str,
    participant: str,
    role: TokenRole,
    ttl_s: float = DEFAULT_TTL_S,
    now: float | None = None,
) -> str:
    """Sign a JWT for one session, participant and role with the keyring's current key.

    Raises ``ValueError`` (a readable line) for an unknown role, empty ids or a lifetime longer than
    ``max_ttl_s`` (a negative one makes an expired token, for tests).
    """
    ring = keyring(secret)
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not session or not participant:
        raise ValueError("session and participant must not be empty")
    if not ttl_s <= ring.max_ttl_s:  # also refuses NaN
        raise ValueError(
            f"token lifetime must be at most {ring.max_ttl_s:g} s (CLASSPULSE_TOKEN_MAX_TTL_S); got {ttl_s:g} s"
        )
    issued = int(time.time() if now is None else now)
    claims = {"sid": session, "sub": participant, "role": role, "iat": issued, "exp": issued + int(ttl_s)}
    return jwt.encode(claims, ring.current.secret, algorithm=ALGORITHM, headers={"kid": ring.current.key_id})


_MALFORMED = "token is malformed; expected a token printed by `classpulse token`"
_BAD_SIGNATURE = "token signature is invalid; ask for a new token with `classpulse token`"
_EXPIRED = "token has expired; ask for a new token with `classpulse token`"


def verify_token(token: str, *, secret: Secret, now: float | None = None) -> Claims:
    """Check signature, key id, expiry and lifetime; raises :class:`TokenError` (401) when any fails."""
    ring = keyring(secret)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError(_MALFORMED, status=401) from None
    if header.get("alg") != ALGORITHM:
        raise TokenError(f"token must be signed with {ALGORITHM}", status=401)
    kid = header.get("kid")
    key = ring.key(kid) if isinstance(kid, str) else (ring.current if kid is None and ring.previous is None else None)
    if key is None:
        raise TokenError(
            "token was signed with a key this server does not accept (rotated out?); ask for a new token", status=401
        )
    at = time.time() if now is None else now
    try:
        data: dict[str, Any] = jwt.decode(
            token,
            key.secret,
            algorithms=[ALGORITHM],
            options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.InvalidSignatureError:
        raise TokenError(_BAD_SIGNATURE, status=401) from None
    except jwt.PyJWTError:
        raise TokenError(_MALFORMED, status=401) from None
    return _claims(data, ring, key_id=key.key_id, now=at)


def _claims(data: dict[str, Any], ring: Keyring, *, key_id: str, now: float) -> Claims:
    try:
        issued, expires = float(data["iat"]), float(data["exp"])
        session, participant, role = data["sid"], data["sub"], data["role"]
    except (TypeError, ValueError):
        raise TokenError(_MALFORMED, status=401) from None
    if not (isinstance(session, str) and isinstance(participant, str) and session and participant):
        raise TokenError(_MALFORMED, status=401)
    if role not in ROLES:
        raise TokenError("token has an unknown role", status=401)
    if now >= expires:
        raise TokenError(_EXPIRED, status=401)
    if issued > now + LEEWAY_S:
        raise TokenError("token is issued in the future; check the issuer's clock", status=401)
    if expires - issued > ring.max_ttl_s + 1:
        raise TokenError(
            f"token lifetime is longer than this server allows ({ring.max_ttl_s:g} s); ask for a shorter-lived token",
            status=401,
        )
    if issued < ring.revoked_before:
        raise TokenError("token was revoked (issued before the revocation cut-off); ask for a new token", status=401)
    return Claims(session=session, participant=participant, role=role, expires=expires, issued=issued, key_id=key_id)


def bearer(header: str | None) -> str:
    """The token from an ``Authorization: Bearer ...`` header; 401 when absent."""
    if not header:
        raise TokenError("missing Authorization header; send 'Authorization: Bearer <token>'", status=401)
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise TokenError("Authorization header must be 'Bearer <token>'", status=401)
    return value.strip()
