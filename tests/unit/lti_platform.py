"""An LTI 1.3 platform emulator for the tests: its own RSA keys, a JWKS endpoint and an OIDC
authorization endpoint that answers with the auto-posting form a real LMS sends (no network)."""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
INSTRUCTOR = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"
LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
CLIENT_ID = "classpulse-tool"
DEPLOYMENT = "deployment-1"


@dataclass
class Platform:
    """The emulated LMS; ``users`` maps a login_hint to (sub, roles)."""

    server: TestServer | None = None
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537,
                                                                                      key_size=2048))
    kid: str = "platform-key-1"
    users: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    """Claims to change in the next id_tokens (a broken or hostile platform)."""
    signing_key: rsa.RSAPrivateKey | None = None
    """Sign with this key instead (same kid): a forged token."""
    authorize_requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def registration(self, **extra: Any) -> dict[str, Any]:
        return {"issuer": self.issuer, "client_id": CLIENT_ID, "auth_login_url": f"{self.issuer}/auth",
                "jwks_url": f"{self.issuer}/jwks", "deployment_ids": [DEPLOYMENT], **extra}

    def id_token(self, *, nonce: str, hint: str, course: str = "course-42", link: str = "link-7") -> str:
        sub, roles = self.users[hint]
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": CLIENT_ID, "sub": sub, "iat": now, "exp": now + 300, "nonce": nonce,
            "name": "Ada Lovelace", "email": "ada@example.edu",
            CLAIM + "deployment_id": DEPLOYMENT, CLAIM + "message_type": "LtiResourceLinkRequest",
            CLAIM + "version": "1.3.0", CLAIM + "roles": roles,
            CLAIM + "context": {"id": course, "title": "Algebra"}, CLAIM + "resource_link": {"id": link},
            CLAIM + "target_link_uri": "https://tool.example/lti/launch",
        }
        claims.update(self.overrides)
        return jwt.encode(claims, self.signing_key or self.key, algorithm="RS256", headers={"kid": self.kid})

    async def jwks(self, request: web.Request) -> web.Response:
        public = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return web.json_response({"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]})

    async def authorize(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.authorize_requests.append(q)
        for name, want in (("scope", "openid"), ("response_type", "id_token"), ("response_mode", "form_post"),
                           ("prompt", "none"), ("client_id", CLIENT_ID)):
            if q.get(name) != want:
                return web.Response(status=400, text=f"bad {name}")
        if q.get("login_hint") not in self.users or not q.get("nonce") or not q.get("state"):
            return web.Response(status=400, text="bad login")
        token = self.id_token(nonce=q["nonce"], hint=q["login_hint"])
        page = (f'<form method="post" action="{html.escape(q["redirect_uri"])}">'
                f'<input type="hidden" name="id_token" value="{html.escape(token)}">'
                f'<input type="hidden" name="state" value="{html.escape(q["state"])}"></form>'
                "<script>document.forms[0].submit()</script>")
        return web.Response(text=page, content_type="text/html")


def form_fields(page: str) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of the platform's auto-posting form."""
    action = re.search(r'action="([^"]+)"', page)
    assert action is not None
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page))
    return html.unescape(action.group(1)), {k: html.unescape(v) for k, v in fields.items()}


def fragment(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).fragment).items()}


@asynccontextmanager
async def platform() -> AsyncIterator[Platform]:
    p = Platform(users={"teacher-hint": (f"teacher-{uuid.uuid4().hex[:6]}", [INSTRUCTOR]),
                        "student-hint": ("student-sub-1", [LEARNER])})
    app = web.Application()
    app.router.add_get("/jwks", p.jwks)
    app.router.add_get("/auth", p.authorize)
    p.server = TestServer(app)
    await p.server.start_server()
    try:
        yield p
    finally:
        await p.server.close()
