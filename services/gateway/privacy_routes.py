"""Privacy routes: a participant's opt-out, a session's aggregate-only mode, and the policy itself.

* ``PUT /api/sessions/{s}/participants/{p}/opt-out``: ``p`` opts out (a student token for itself,
  a teacher or platform token for anyone in the session). From then on its media is dropped before
  analysis (ingest and inference), it gets no scores, and every view shows it only as "opted out";
  its live state, waiting media and inference snapshot are erased at once.
* ``DELETE`` on the same path: ``p`` opts back in (the student itself or the platform; a teacher may
  not undo a student's choice).
* ``PUT /api/sessions/{s}/privacy`` ``{"aggregate_only": true|false}`` (teacher or platform): class
  figures only. Not switchable off where ``CLASSPULSE_AGGREGATE_ONLY=true`` (409).
* ``GET /api/sessions/{s}/privacy``: the policy (a student token sees only its own opt-out).

Every change is stored (Redis in distributed mode: every ingest, inference worker and gateway
reads it) and published on ``classpulse.privacy`` (the aggregator and other gateways apply it).
"""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.gateway.auth import error_response, request_token
from services.gateway.context import GATEWAY, GatewayContext
from services.gateway.erasure import ERASE_ROUTE, actor, delete_session, publish_change
from services.gateway.models import ErrorBody
from services.gateway.openapi import SESSION_PARAM
from shared.contracts.live import LivePrivacy, encode_live
from shared.contracts.privacy import MAX_OPTED_OUT, ErasedItem, PrivacyEvent, PrivacyKind, SessionPrivacy
from shared.contracts.timing import wall_clock
from shared.log import get_logger, pii
from shared.openapi import Param, RouteDoc, add_documented_route
from shared.tokens import Claims, TokenError, bearer, verify_token

_log = get_logger(__name__)
POLICY_PATH = "/api/sessions/{session}/privacy"
OPT_OUT_PATH = "/api/sessions/{session}/participants/{participant}/opt-out"
PARTICIPANT_PARAM = Param("participant", where="path")
MAX_BODY = 1024
MAX_ID = 128
"""Longest participant id (the media contract's bound)."""
_TOKEN_ERRORS = (("401", "Missing, malformed or expired token"),)


class TooMany(Exception):
    """The session's opt-out list is full."""


class PrivacyMode(BaseModel):
    """``PUT /api/sessions/{s}/privacy``: the session's mode."""

    model_config = ConfigDict(extra="forbid")

    aggregate_only: bool = Field(description="True: class figures only (no per-student rows anywhere).")


class OptOutReceipt(BaseModel):
    """A participant's opt-out as it now stands."""

    model_config = ConfigDict(extra="forbid")

    session: str
    participant: str
    opted_out: bool
    erased: list[ErasedItem] = Field(default_factory=list, description="What of the participant's data was erased.")


def _doc(method: str, path: str, summary: str, *, response: type[BaseModel], errors: tuple[tuple[str, str], ...],
         params: tuple[Param, ...] = (SESSION_PARAM,), request: type[BaseModel] | None = None) -> RouteDoc:
    return RouteDoc(method, path, summary, response=response, security=("bearer",), error_model=ErrorBody,
                    errors=(*_TOKEN_ERRORS, *errors), params=params, request_model=request)


ROUTES = (
    _doc("GET", POLICY_PATH, "The session's privacy policy (opt-outs, aggregate-only mode)", response=SessionPrivacy,
         errors=(("403", "Token of another session"),)),
    _doc("PUT", POLICY_PATH, "Switch the session's aggregate-only mode (teacher or platform)", response=SessionPrivacy,
         request=PrivacyMode, errors=(("400", "Not {\"aggregate_only\": true|false}"),
                                      ("403", "Not a teacher or platform token of this session"),
                                      ("409", "Aggregate-only is enforced for every session by the deployment"),
                                      ("503", "The policy store or event log is unavailable; retry"))),
    _doc("PUT", OPT_OUT_PATH, "Opt a participant out: no media analysed, no scores, shown only as 'opted out'",
         response=OptOutReceipt, params=(SESSION_PARAM, PARTICIPANT_PARAM),
         errors=(("400", "Participant id longer than 128 characters"),
                 ("403", "Another participant's student token, a viewer token, or another session"),
                 ("503", "The policy store or event log is unavailable; retry"))),
    _doc("DELETE", OPT_OUT_PATH, "Opt a participant back in (the student itself or the platform)",
         response=OptOutReceipt, params=(SESSION_PARAM, PARTICIPANT_PARAM),
         errors=(("400", "Participant id longer than 128 characters"),
                 ("403", "Not the student itself or a platform token of this session"),
                 ("503", "The policy store or event log is unavailable; retry"))),
)


def _claims(request: web.Request, ctx: GatewayContext, session: str, *, header_only: bool) -> Claims:
    token = bearer(request.headers.get("Authorization")) if header_only else request_token(request)
    claims = verify_token(token, secret=ctx.token_secret)
    if claims.session != session:
        raise TokenError("this token is scoped to another session", status=403)
    return claims


def _public(policy: SessionPrivacy, claims: Claims) -> SessionPrivacy:
    """The policy as this token may see it: a student only its own opt-out; aggregate-only: no ids."""
    if policy.aggregate_only:
        return policy.model_copy(update={"opted_out": []})
    if claims.role == "student":
        return policy.model_copy(update={"opted_out": [p for p in policy.opted_out if p == claims.participant]})
    return policy


async def get_policy(request: web.Request) -> web.StreamResponse:
    ctx, session = request.app[GATEWAY], request.match_info["session"]
    try:
        claims = _claims(request, ctx, session, header_only=False)
    except TokenError as exc:
        return error_response(exc.status, str(exc))
    policy = await ctx.privacy.get(session)
    return web.json_response(text=_public(policy, claims).model_dump_json())


async def _body(request: web.Request) -> object:
    data = await request.content.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ValueError("too large")
    return json.loads(data)


async def put_mode(request: web.Request) -> web.StreamResponse:
    ctx, session = request.app[GATEWAY], request.match_info["session"]
    try:
        claims = _claims(request, ctx, session, header_only=True)
    except TokenError as exc:
        return error_response(exc.status, str(exc))
    if claims.role not in ("teacher", "platform"):
        return error_response(403, "only a teacher or platform token sets the session's privacy mode")
    try:
        mode = PrivacyMode.model_validate(await _body(request))
    except (ValueError, ValidationError, RecursionError):
        return error_response(400, 'send a JSON object {"aggregate_only": true} or {"aggregate_only": false}')
    if not mode.aggregate_only and ctx.privacy.aggregate_only:
        return error_response(409, "every session is aggregate-only here (CLASSPULSE_AGGREGATE_ONLY=true); "
                                   "an operator can change that setting")
    now = wall_clock()
    return await _change(ctx, session, claims, "aggregate_only", None, now, aggregate_only=mode.aggregate_only)


async def _change(ctx: GatewayContext, session: str, claims: Claims, kind: PrivacyKind, participant: str | None,
                  now: float, *, aggregate_only: bool | None = None) -> web.StreamResponse:
    def change(stored: SessionPrivacy | None) -> SessionPrivacy:
        policy = stored or SessionPrivacy(session=session)
        if participant is not None:
            if kind == "opted_out" and not policy.is_opted_out(participant) and len(policy.opted_out) >= MAX_OPTED_OUT:
                raise TooMany
            return policy.with_opt_out(participant, kind == "opted_out", now=now)
        return policy.model_copy(update={"aggregate_only": bool(aggregate_only), "updated": now})

    event = PrivacyEvent(event_id=PrivacyEvent.make_id(session, kind, participant, now), session=session, kind=kind,
                         participant=participant, aggregate_only=aggregate_only, by=actor(claims), ts=now)
    try:
        policy = ctx.privacy.remember(await ctx.privacy.store.update(session, change))
    except TooMany:
        return error_response(409, f"at most {MAX_OPTED_OUT} participants can opt out of one session; make it "
                                   "aggregate-only instead (PUT /api/sessions/{s}/privacy)")
    except Exception as exc:  # the store (Redis) is down: nothing changed that the caller could rely on
        ctx.metrics.errors_total.labels("gateway", "privacy_store").inc()
        _log.error("privacy policy state %s -> %s: %s", "current", "unchanged", type(exc).__name__)
        return error_response(503, "the privacy policy store is unavailable; retry the same request")
    try:
        erased: list[ErasedItem] = []
        if kind == "opted_out" and participant is not None:
            erased = await ctx.privacy.store.forget_participant(session, participant)
    except Exception as exc:  # stored (media is dropped from now on), the waiting data not yet erased
        ctx.metrics.errors_total.labels("gateway", "privacy_store").inc()
        _log.error("participant data state %s -> %s: %s", "opted_out", "not_erased", type(exc).__name__)
        return error_response(503, "the opt-out is stored but the participant's waiting data was not erased; "
                                   "retry the same request")
    ctx.history.privacy(event)
    ctx.hub.deliver(session, encode_live(LivePrivacy(event=event)))  # other gateways: from the log
    if not await publish_change(ctx, event):
        return error_response(503, "the change is stored but not yet in the event log; retry the same request")
    _log.info("privacy policy %s -> %s", "current", kind, extra=pii(session=session, participant=participant))
    if participant is None:
        return web.json_response(text=policy.model_dump_json())
    receipt = OptOutReceipt(session=session, participant=participant, opted_out=policy.is_opted_out(participant),
                            erased=erased)
    return web.json_response(text=receipt.model_dump_json())


async def _opt(request: web.Request, *, opt_out: bool) -> web.StreamResponse:
    ctx, session = request.app[GATEWAY], request.match_info["session"]
    participant = request.match_info["participant"]
    if not 0 < len(participant) <= MAX_ID:
        return error_response(400, f"participant id must be 1 to {MAX_ID} characters, as in its publish token")
    try:
        claims = _claims(request, ctx, session, header_only=True)
    except TokenError as exc:
        return error_response(exc.status, str(exc))
    if claims.role == "student" and claims.participant != participant:
        return error_response(403, f"a student token may opt only itself ({claims.participant!r}) in or out")
    if claims.role == "viewer":
        return error_response(403, "a viewer token may only view; use the student's own, a teacher or platform token")
    if not opt_out and claims.role == "teacher":
        return error_response(403, "only the student itself (or the platform) may opt back in")
    kind: PrivacyKind = "opted_out" if opt_out else "opted_in"
    return await _change(ctx, session, claims, kind, participant, wall_clock())


async def put_opt_out(request: web.Request) -> web.StreamResponse:
    return await _opt(request, opt_out=True)


async def delete_opt_out(request: web.Request) -> web.StreamResponse:
    return await _opt(request, opt_out=False)


def add_privacy_routes(app: web.Application) -> None:
    handlers = (get_policy, put_mode, put_opt_out, delete_opt_out)
    for doc, handler in zip(ROUTES, handlers, strict=True):
        add_documented_route(app, doc, handler)
    add_documented_route(app, ERASE_ROUTE, delete_session)
