"""``POST /api/sessions/{session}/interactions``: interaction events in, all or nothing.

The gateway is the text stage for events that arrive over REST: it checks every item (contract,
session, the token's scope: a student as itself, a teacher or platform for anyone), derives
``is_question``, ``words`` and on-topic ``relevance`` from the text (:class:`shared.text.stage.TextStage`),
drops the text unless ``CLASSPULSE_KEEP_TEXT=true``,
and publishes the batch to ``classpulse.interactions`` (keyed by session). One bad item rejects
the whole batch with one line per bad item; nothing is published then. Text is never logged.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from services.gateway.context import GATEWAY
from services.gateway.models import ErrorBody, InteractionBatch, InteractionReceipt
from services.gateway.openapi import SESSION_PARAM
from shared.contracts.interactions import InteractionEvent
from shared.contracts.topics import INTERACTIONS
from shared.log import get_logger
from shared.openapi import RouteDoc
from shared.tokens import Claims, Secret, TokenError, bearer, verify_token
from shared.transport.typed import EventPublisher

_log = get_logger(__name__)
STAGE = "gateway"
PATH = "/api/sessions/{session}/interactions"

ROUTE = RouteDoc(
    "POST",
    PATH,
    "Post interaction events (chat, questions, answers, poll answers, reactions, hand-raise button)",
    response=InteractionReceipt,
    status="202",
    description="Accepted: every event was published to classpulse.interactions",
    security=("bearer",),
    error_model=ErrorBody,
    errors=(
        ("400", "Not a JSON array, or invalid items (one line per bad item in 'items'); nothing was accepted"),
        ("401", "Missing, malformed or expired token"),
        ("403", "Token of another session, a viewer token, or a student posting for someone else"),
        ("413", "More events or bytes than one batch may hold"),
        ("503", "The event log is unavailable; retry the same batch (event ids make repeats harmless)"),
    ),
    params=(SESSION_PARAM,),
    request_model=InteractionBatch,
)


def _error(status: int, message: str, items: list[str] | None = None) -> web.Response:
    return web.json_response(text=ErrorBody(error=message, items=items or []).model_dump_json(), status=status)


def _claims(request: web.Request, secret: Secret, session: str) -> Claims:
    claims = verify_token(bearer(request.headers.get("Authorization")), secret=secret)
    if claims.role == "viewer":
        raise TokenError("a viewer token may only view; post with a student, teacher or platform token", status=403)
    if claims.session != session:
        raise TokenError("this token is scoped to another session", status=403)
    return claims


def _pydantic_line(index: int, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    return f"item {index}: " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with one batch item: 403 when the token may not post it, else 400."""

    line: str
    status: int = 400


def check_item(index: int, item: Any, *, session: str, claims: Claims) -> InteractionEvent | Problem:
    """The event of one batch item, or the readable line saying what is wrong with it."""
    if not isinstance(item, dict):
        return Problem(f"item {index}: must be a JSON object (an interaction event), got {type(item).__name__}")
    given = item.get("session", session)
    if given != session:
        return Problem(f"item {index}: session {given!r} is not this route's session {session!r}")
    try:
        event = InteractionEvent.model_validate({**item, "session": session})
    except ValidationError as exc:
        return Problem(_pydantic_line(index, exc))
    if not claims.can_post_interaction(session, event.participant):
        return Problem(f"item {index}: a student token may post only as itself ({claims.participant!r})", 403)
    if claims.role == "student" and event.role != "student":
        return Problem(f"item {index}: a student token cannot post as role {event.role!r}", 403)
    return event


async def _body(request: web.Request, limit: int) -> bytes | None:
    if request.content_length is not None and request.content_length > limit:
        return None
    data = await request.content.read(limit + 1)
    return None if len(data) > limit else data


async def post_interactions(request: web.Request) -> web.StreamResponse:
    ctx = request.app[GATEWAY]
    session = request.match_info["session"]
    try:
        claims = _claims(request, ctx.token_secret, session)
    except TokenError as exc:
        return _error(exc.status, str(exc))
    rejected = ctx.metrics.errors_total.labels(STAGE, "interactions_rejected")
    body = await _body(request, ctx.interactions_max_bytes)
    if body is None:
        rejected.inc()
        return _error(413, f"body is larger than {ctx.interactions_max_bytes} bytes; split the batch")
    try:
        items = json.loads(body)
    except ValueError:
        rejected.inc()
        return _error(400, "body is not JSON; send a JSON array of interaction events")
    if not isinstance(items, list):
        rejected.inc()
        return _error(400, f"body must be a JSON array of interaction events, got a JSON {type(items).__name__}")
    if len(items) > ctx.interactions_max_items:
        rejected.inc()
        return _error(413, f"batch holds {len(items)} events; at most {ctx.interactions_max_items} per request")
    events: list[InteractionEvent] = []
    problems: list[Problem] = []
    for i, item in enumerate(items):
        checked = check_item(i, item, session=session, claims=claims)
        if isinstance(checked, Problem):
            problems.append(checked)
        else:
            events.append(checked)
    if problems:
        rejected.inc()
        status = max(p.status for p in problems)
        what = "may not be posted with this token" if status == 403 else "are invalid"
        return _error(
            status,
            f"{len(problems)} of {len(items)} interaction events {what}; nothing was accepted",
            [p.line for p in problems],
        )
    if ctx.events is None:
        return _error(503, "this gateway has no event log to publish to")
    policy = await ctx.privacy.get(session)
    left_out = [e for e in events if policy.is_opted_out(e.participant)]  # opted out: not analysed, not published
    events = [e for e in events if not policy.is_opted_out(e.participant)]
    events = await asyncio.to_thread(ctx.text.derive, events, keep_text=ctx.keep_text)  # embeddings: CPU work
    publisher = EventPublisher(bus=ctx.events, topic=INTERACTIONS)
    try:
        await asyncio.gather(*(publisher.publish(e) for e in events))
    except Exception as exc:  # the broker: the client retries the batch, event ids dedupe
        ctx.metrics.errors_total.labels(STAGE, "interactions_publish").inc()
        _log.error("interaction batch state %s -> %s: %s", "accepted", "unpublished", type(exc).__name__)
        return _error(503, "the event log is unavailable; retry the same batch (event ids make repeats harmless)")
    ctx.metrics.messages_total.labels(STAGE, "interaction_posted").inc(len(events))
    _log.debug("interaction batch state %s -> %s", "received", "published", extra={"events": len(events)})
    receipt = InteractionReceipt(session=session, accepted=len(events), event_ids=[e.event_id for e in events],
                                 opted_out=len(left_out))
    return web.json_response(text=receipt.model_dump_json(), status=202)
