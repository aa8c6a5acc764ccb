"""Webhook registration over REST: per session (teacher or platform token) or per deployment (a deployment
platform token), listing without secrets, removal, and the dead-letter record."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.gateway.auth import error_response, manager_claims
from services.gateway.models import ErrorBody
from services.gateway.openapi import SESSION_PARAM
from services.gateway.webhooks.signing import new_secret
from services.gateway.webhooks.store import StoredEndpoint, WebhookStore
from shared.contracts.webhooks import DeadLetter, WebhookEndpoint, WebhookEndpointCreated, WebhookEvent
from shared.openapi import Param, RouteDoc, add_documented_route
from shared.tokens import Secret, TokenError

WEBHOOKS: web.AppKey[WebhookStore] = web.AppKey("classpulse_webhooks", WebhookStore)  # type: ignore[type-abstract]
SECRET: web.AppKey[Secret] = web.AppKey("classpulse_webhook_token_secret")
MAX_ENDPOINTS = 50


def _default_events() -> list[WebhookEvent]:
    return ["session.ended"]


class WebhookRegistration(BaseModel):
    """POST body: where to deliver and what."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="http(s) URL that receives the POSTs.")
    events: list[WebhookEvent] = Field(default_factory=_default_events, min_length=1)
    description: str = Field(default="", max_length=500)


class WebhookList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoints: list[WebhookEndpoint]


class DeadLetterPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dead_letters: list[DeadLetter]


_TOKEN_ERRORS = (("401", "Missing, malformed or expired token"),
                 ("403", "Not a teacher/platform token of this session (or, deployment-wide, a deployment token)"))
_ID = Param("endpoint", where="path")


def _doc(method: str, path: str, summary: str, *, errors: tuple[tuple[str, str], ...] = (), **kw: object) -> RouteDoc:
    params = (SESSION_PARAM,) if "{session}" in path else ()
    params = (*params, _ID) if "{endpoint}" in path else params
    return RouteDoc(method, path, summary, security=("bearer",), error_model=ErrorBody,
                    errors=(*errors, *_TOKEN_ERRORS), params=params, **kw)  # type: ignore[arg-type]


def _problem(body: bytes) -> WebhookRegistration | str:
    try:
        reg = WebhookRegistration.model_validate(json.loads(body))
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            err = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            return f"{where}: {err['msg']}" if where else str(err["msg"])
        return 'body is not JSON; send {"url": "https://...", "events": ["session.ended"]}'
    parts = urlsplit(reg.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"url must be an absolute http(s) URL, got {reg.url!r}"
    return reg


Scoped = Callable[[web.Request, str | None], Awaitable[web.StreamResponse]]


def _guard(handler: Scoped, *, deployment: bool) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def guarded(request: web.Request) -> web.StreamResponse:
        session = None if deployment else request.match_info["session"]
        try:
            manager_claims(request, secret=request.app[SECRET], session=session)
        except TokenError as exc:
            return error_response(exc.status, str(exc))
        return await handler(request, session)

    return guarded


async def _register(request: web.Request, session: str | None) -> web.StreamResponse:
    store = request.app[WEBHOOKS]
    checked = _problem(await request.content.read(16_384))
    if isinstance(checked, str):
        return error_response(400, checked)
    if len(await store.endpoints(session)) >= MAX_ENDPOINTS:
        return error_response(409, f"at most {MAX_ENDPOINTS} endpoints per scope; remove one first")
    endpoint = WebhookEndpoint(
        id="whe_" + uuid.uuid4().hex[:16], url=checked.url, events=sorted(set(checked.events)),
        scope="deployment" if session is None else "session", session=session,
        description=checked.description, created=time.time(),
    )
    secret = new_secret()
    await store.add_endpoint(StoredEndpoint(endpoint=endpoint, secret=secret))
    created = WebhookEndpointCreated(**endpoint.model_dump(), secret=secret)
    return web.json_response(text=created.model_dump_json(), status=201)


async def _list(request: web.Request, session: str | None) -> web.StreamResponse:
    stored = await request.app[WEBHOOKS].endpoints(session)
    return web.json_response(text=WebhookList(endpoints=[s.endpoint for s in stored]).model_dump_json())


async def _remove(request: web.Request, session: str | None) -> web.StreamResponse:
    if not await request.app[WEBHOOKS].remove_endpoint(session, request.match_info["endpoint"]):
        return error_response(404, "no such webhook endpoint in this scope; list them with GET")
    return web.Response(status=204)


async def _dead(request: web.Request, session: str | None) -> web.StreamResponse:
    letters = await request.app[WEBHOOKS].dead_letters(500)
    return web.json_response(text=DeadLetterPage(dead_letters=letters).model_dump_json())


def add_webhook_routes(app: web.Application, *, store: WebhookStore, token_secret: Secret) -> None:
    app[WEBHOOKS] = store
    app[SECRET] = token_secret
    bad = (("400", "Not a registration (one line says what is wrong)"),)
    for prefix, deployment in (("/api/sessions/{session}/webhooks", False), ("/api/webhooks", True)):
        scope = "every session (deployment token)" if deployment else "this session"
        add_documented_route(app, _doc("POST", prefix, f"Register a webhook endpoint for {scope}; answers its secret",
                                       response=WebhookEndpointCreated, status="201", description="Created",
                                       request_model=WebhookRegistration, errors=bad),
                             _guard(_register, deployment=deployment))
        add_documented_route(app, _doc("GET", prefix, f"Webhook endpoints of {scope} (no secrets)",
                                       response=WebhookList), _guard(_list, deployment=deployment))
        add_documented_route(app, _doc("DELETE", prefix + "/{endpoint}", f"Remove a webhook endpoint of {scope}",
                                       status="204", description="Removed",
                                       errors=(("404", "No such endpoint in this scope"),)),
                             _guard(_remove, deployment=deployment))
    add_documented_route(app, _doc("GET", "/api/webhooks/dead-letters",
                                   "Deliveries given up after their last attempt (newest first)",
                                   response=DeadLetterPage), _guard(_dead, deployment=True))
