"""``POST /api/sessions/{session}/end``: the classroom platform (or the teacher) says the class is over.

Publishes one ``session_ended`` lifecycle event (``classpulse.lifecycle``; its id is per session, so a
repeat is harmless): the aggregator makes its final flush, the gateway marks the session ended and
sends the ``session.ended`` webhooks with the report.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from services.gateway.auth import error_response, manager_claims
from services.gateway.context import GATEWAY
from services.gateway.models import ErrorBody
from services.gateway.openapi import SESSION_PARAM
from shared.contracts.events import LifecycleEvent
from shared.contracts.timing import wall_clock
from shared.contracts.topics import LIFECYCLE
from shared.log import get_logger
from shared.openapi import RouteDoc
from shared.tokens import TokenError
from shared.transport.typed import EventPublisher

_log = get_logger(__name__)


class SessionEnded(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session: str
    event_id: str
    ended_at: float


ROUTE = RouteDoc(
    "POST", "/api/sessions/{session}/end", "End the session: final report, session.ended webhooks",
    response=SessionEnded, status="202", description="Accepted: session_ended was published",
    security=("bearer",), error_model=ErrorBody, params=(SESSION_PARAM,),
    errors=(("401", "Missing, malformed or expired token"),
            ("403", "Not a teacher or platform token of this session"),
            ("503", "The event log is unavailable; retry (the event id makes a repeat harmless)")),
)


def end_event_id(session: str) -> str:
    return f"{session}/session_ended"


async def end_session(request: web.Request) -> web.StreamResponse:
    ctx = request.app[GATEWAY]
    session = request.match_info["session"]
    try:
        claims = manager_claims(request, secret=ctx.token_secret, session=session)
    except TokenError as exc:
        return error_response(exc.status, str(exc))
    if ctx.events is None:
        return error_response(503, "this gateway has no event log to publish to")
    event = LifecycleEvent(event_id=end_event_id(session), session=session, participant=claims.participant,
                           role="teacher", kind="session_ended", ts=wall_clock())
    try:
        await EventPublisher(bus=ctx.events, topic=LIFECYCLE).publish(event)
    except Exception as exc:  # the broker: the caller retries
        ctx.metrics.errors_total.labels("gateway", "session_end_publish").inc()
        _log.error("session end state %s -> %s: %s", "requested", "unpublished", type(exc).__name__)
        return error_response(503, "the event log is unavailable; retry (the event id makes a repeat harmless)")
    _log.info("session state %s -> %s", "running", "ended")
    body = SessionEnded(session=session, event_id=event.event_id, ended_at=event.ts)
    return web.json_response(text=body.model_dump_json(), status=202)
