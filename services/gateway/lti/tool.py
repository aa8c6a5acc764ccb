"""The LTI 1.3 login initiation and launch handlers (OIDC third-party initiated login, implicit flow).

``/lti/login`` (GET or POST from the platform): look the issuer up, sign a short-lived ``state``
carrying a fresh ``nonce``, bind it to the browser with a cookie and redirect to the platform's
authorization endpoint. ``/lti/launch`` (form POST of ``id_token`` + ``state``): check the state
and its cookie, verify the ``id_token`` against the platform's JWKS (PyJWT: RS256 signature,
``iss``, ``aud``/``azp``, ``exp``/``iat``, single-use ``nonce``), check the LTI claims, mint a
ClassPulse token and redirect: instructors to the dashboard, learners to the join page. The
token travels in the URL fragment, so it never reaches a server log.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web

from services.gateway.lti.claims import LaunchIdentity, LaunchRejected, identity
from services.gateway.lti.platforms import LtiPlatform, LtiRegistry
from services.gateway.lti.settings import LtiSettings
from shared.log import get_logger
from shared.tokens import Secret, issue_token, keyring

_log = get_logger(__name__)
COOKIE = "classpulse_lti"
STATE_TYPE = "classpulse-lti-state"
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384"]
MAX_FORM_BYTES = 64 * 1024


class NonceLedger:
    """Nonces already used in a launch, forgotten after their state expired (bounded)."""

    def __init__(self, *, max_items: int = 100_000) -> None:
        self._used: OrderedDict[str, float] = OrderedDict()
        self._max = max_items

    def use(self, nonce: str, *, until: float, now: float) -> bool:
        """Record ``nonce``; False when it was used before (a replayed launch)."""
        while self._used and (next(iter(self._used.values())) < now or len(self._used) >= self._max):
            self._used.popitem(last=False)
        if nonce in self._used:
            return False
        self._used[nonce] = until
        return True


@dataclass
class LtiTool:
    """One gateway's LTI tool: the registry, the keys it signs states with, the JWKS clients."""

    settings: LtiSettings
    registry: LtiRegistry | None
    token_secret: Secret
    nonces: NonceLedger = field(default_factory=NonceLedger)
    _jwks: dict[str, jwt.PyJWKClient] = field(default_factory=dict)

    @property
    def _state_key(self) -> bytes:
        # Derived from the signing key (a state lives minutes, so a rotation only restarts logins in flight).
        secret = keyring(self.token_secret).current.secret
        return hmac.new(secret.encode(), b"classpulse-lti-state", hashlib.sha256).digest()

    def _base(self, request: web.Request) -> str:
        return self.settings.tool_url.rstrip("/") or f"{request.scheme}://{request.host}"

    def _landing(self, request: web.Request, url: str) -> str:
        return url if "://" in url else self._base(request) + "/" + url.lstrip("/")

    def _registry(self) -> LtiRegistry:
        if self.registry is None:
            raise LaunchRejected("LTI is not configured on this ClassPulse; set CLASSPULSE_LTI_PLATFORMS_FILE",
                                 status=404)
        return self.registry

    async def _params(self, request: web.Request) -> dict[str, str]:
        if request.method == "POST":
            if (request.content_length or 0) > MAX_FORM_BYTES:
                raise LaunchRejected("the LTI request is larger than 64 KiB", status=413)
            try:
                form = await request.post()
            except ValueError:
                raise LaunchRejected("the LTI request is not a readable form post", status=400) from None
            return {k: v for k, v in form.items() if isinstance(v, str)}
        return dict(request.query)

    # --- login initiation -------------------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.StreamResponse:
        try:
            params = await self._params(request)
            registry = self._registry()
            issuer, hint = params.get("iss"), params.get("login_hint")
            if not issuer or not hint or not params.get("target_link_uri"):
                raise LaunchRejected("an LTI login needs iss, login_hint and target_link_uri; start it from the LMS",
                                     status=400)
            platform = registry.find(issuer, params.get("client_id"))
            if platform is None:
                raise LaunchRejected(f"platform {issuer[:200]!r} is not registered; add it to the LTI platforms file",
                                     status=400)
        except LaunchRejected as exc:
            return _rejected(exc)
        now = time.time()
        nonce = secrets.token_urlsafe(24)
        state = jwt.encode(
            {"typ": STATE_TYPE, "iss": platform.issuer, "aud": platform.client_id, "nonce": nonce,
             "iat": int(now), "exp": int(now + self.settings.state_ttl_s)},
            self._state_key, algorithm="HS256",
        )
        query = {
            "scope": "openid", "response_type": "id_token", "response_mode": "form_post", "prompt": "none",
            "client_id": platform.client_id, "redirect_uri": self._base(request) + "/lti/launch",
            "login_hint": hint, "state": state, "nonce": nonce,
        }
        if params.get("lti_message_hint"):
            query["lti_message_hint"] = params["lti_message_hint"]
        sep = "&" if "?" in platform.auth_login_url else "?"
        response = web.HTTPFound(platform.auth_login_url + sep + urlencode(query))
        secure = request.scheme == "https" or self.settings.tool_url.startswith("https://")
        response.set_cookie(
            COOKIE, _bind(state), max_age=int(self.settings.state_ttl_s), path="/lti", httponly=True,
            secure=secure, samesite="None" if secure else "Lax",
        )
        return response

    # --- launch -----------------------------------------------------------------------------------------------

    async def launch(self, request: web.Request) -> web.StreamResponse:
        try:
            params = await self._params(request)
            registry = self._registry()
            who = await self._verify(request, registry, params)
        except LaunchRejected as exc:
            return _rejected(exc)
        token = issue_token(
            secret=self.token_secret, session=who.session, participant=who.participant, role=who.role,
            ttl_s=self.settings.token_ttl_s,
        )
        if who.role == "teacher":
            target = self._landing(request, self.settings.dashboard_url) + "#" + urlencode(
                {"session": who.session, "token": token})
        else:
            target = self._landing(request, self.settings.join_url) + "#" + urlencode(
                {"session": who.session, "participant": who.participant, "token": token})
        _log.info("lti launch accepted role=%s", who.role)
        response = web.HTTPSeeOther(target, headers={"Cache-Control": "no-store"})
        response.del_cookie(COOKIE, path="/lti")
        return response

    async def _verify(self, request: web.Request, registry: LtiRegistry, params: dict[str, str]) -> LaunchIdentity:
        id_token, state = params.get("id_token"), params.get("state")
        if params.get("error"):
            raise LaunchRejected(f"the LMS refused the login: {params['error'][:100]}; ask the LMS administrator",
                                 status=400)
        if not id_token or not state:
            raise LaunchRejected("an LTI launch is a form post with id_token and state; start it from the LMS",
                                 status=400)
        try:
            started = jwt.decode(state, self._state_key, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.ExpiredSignatureError:
            raise LaunchRejected("the LTI login expired before the launch; start again from the LMS",
                                 status=400) from None
        except jwt.InvalidTokenError:
            raise LaunchRejected("the launch's state was not issued by this ClassPulse; start again from the LMS",
                                 status=400) from None
        if started.get("typ") != STATE_TYPE:
            raise LaunchRejected("the launch's state was not issued by this ClassPulse", status=400)
        cookie = request.cookies.get(COOKIE)
        if cookie is None or not hmac.compare_digest(cookie, _bind(state)):
            raise LaunchRejected("the launch did not come from the browser that started the login; allow cookies "
                                 "for ClassPulse and start again from the LMS", status=400)
        platform = registry.find(str(started["iss"]), str(started["aud"]))
        if platform is None:
            raise LaunchRejected("the platform of this login is no longer registered", status=400)
        claims = await self._decode(platform, id_token)
        if claims.get("nonce") != started.get("nonce"):
            raise LaunchRejected("the id_token's nonce does not match the login; start again from the LMS", status=401)
        now = time.time()
        if not self.nonces.use(str(started["nonce"]), until=float(started["exp"]), now=now):
            raise LaunchRejected("this launch was already used; start again from the LMS", status=401)
        return identity(platform, claims)

    async def _decode(self, platform: LtiPlatform, id_token: str) -> dict[str, Any]:
        client = self._jwks.setdefault(platform.jwks_url, jwt.PyJWKClient(platform.jwks_url, lifespan=300, timeout=5))
        try:
            key = await asyncio.to_thread(client.get_signing_key_from_jwt, id_token)
        except jwt.PyJWKClientConnectionError:
            _log.warning("lti jwks unreachable issuer=%s", platform.issuer)
            raise LaunchRejected("could not fetch the platform's keys (jwks_url); try again, or check the LTI "
                                 "platforms file", status=502) from None
        except (jwt.PyJWKClientError, jwt.DecodeError):
            raise LaunchRejected("the id_token is signed with a key the platform does not publish",
                                 status=401) from None
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token, key.key, algorithms=ID_TOKEN_ALGORITHMS, audience=platform.client_id,
                issuer=platform.issuer, leeway=self.settings.clock_leeway_s,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce"]},
            )
        except jwt.ExpiredSignatureError:
            raise LaunchRejected("the id_token has expired; start again from the LMS", status=401) from None
        except jwt.InvalidAudienceError:
            raise LaunchRejected("the id_token is for another tool (aud); check client_id in the LTI platforms file",
                                 status=401) from None
        except jwt.InvalidIssuerError:
            raise LaunchRejected("the id_token's issuer does not match the login", status=401) from None
        except jwt.MissingRequiredClaimError as exc:
            raise LaunchRejected(f"the id_token lacks the {exc.claim} claim", status=401) from None
        except jwt.InvalidSignatureError:
            raise LaunchRejected("the id_token's signature does not match the platform's keys", status=401) from None
        except jwt.InvalidTokenError:
            raise LaunchRejected("the id_token is not a valid signed JWT", status=401) from None
        audience = claims["aud"]
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != platform.client_id:
            raise LaunchRejected("the id_token names several audiences but azp is not this tool", status=401)
        return claims


def _bind(state: str) -> str:
    """The cookie value that ties a state to the browser that started the login."""
    return hashlib.sha256(state.encode()).hexdigest()[:32]


def _rejected(exc: LaunchRejected) -> web.Response:
    _log.info("lti request refused status=%s", exc.status)
    return web.Response(text=f"ClassPulse could not open the class: {exc}\n", status=exc.status,
                        content_type="text/plain", headers={"Cache-Control": "no-store"})
