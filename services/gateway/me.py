"""A student's own view: ``GET /api/sessions/{s}/participants/{p}/me`` and the ``/me`` page.

With a student token the answer holds that student's signals, summary, explanation and questions —
nobody else's: the token must name the participant in the path (a teacher, viewer or platform token of
the session may open any participant's view, as they see the class already). The page reads the token
from the URL fragment (``/me#session=S&participant=P&token=T``), so it never reaches a server log.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from pydantic import BaseModel, Field

from services.gateway.auth import error_response, request_token
from services.gateway.context import GATEWAY
from services.gateway.dashboard_page import PLACEHOLDER, registry_json
from services.gateway.live_state import live_state
from services.gateway.models import LiveParticipant
from services.gateway.openapi import NOT_FOUND, SESSION_PARAM, viewer_route
from services.gateway.report import build_report
from shared.analytics.privacy import merged
from shared.contracts.events import Role
from shared.contracts.report import ParticipantSummary, QuestionItem, TimelineRow
from shared.openapi import Param, RouteDoc
from shared.tokens import Claims, TokenError, verify_token

PATH = "/api/sessions/{session}/participants/{participant}/me"
MAX_ROWS = 3_600
"""Most recent per-second rows in one answer (an hour)."""
RECORDED = (
    "ClassPulse records behaviour signals only: whether a face is in frame (present), looking at the screen "
    "(attentive), speaking, a raised hand, and written or spoken questions. It never stores your camera or "
    "microphone, and never judges emotion or sentiment."
)


class MyView(BaseModel):
    """What ClassPulse holds about one participant of one session."""

    session: str
    participant: str
    role: Role = "student"
    recorded: str = Field(default=RECORDED, description="What is and is not recorded, in words.")
    opted_out: bool = Field(default=False, description="The participant opted out: nothing about them is analysed.")
    aggregate_only: bool = Field(default=False, description="The session shows class figures only (no own rows).")
    now: LiveParticipant | None = Field(default=None, description="The latest signals and their explanation.")
    summary: ParticipantSummary | None = Field(default=None, description="The session so far.")
    timeline: list[TimelineRow] = Field(default_factory=list, description="Own per-second rows (latest hour).")
    questions: list[QuestionItem] = Field(default_factory=list, description="Own questions and messages judged.")


ROUTE = viewer_route(
    "GET", PATH, "A participant's own view: signals, summary, explanation (a student token: only its own)",
    params=(SESSION_PARAM, Param("participant", where="path", description="the participant id")),
    response=MyView, errors=(NOT_FOUND,),
)
PAGE = RouteDoc("GET", "/me", "A student's own page (/me#session=S&participant=P&token=T)", content="text/html")


def _claims(request: web.Request, session: str, participant: str) -> Claims:
    claims = verify_token(request_token(request), secret=request.app[GATEWAY].token_secret)
    if claims.session != session:
        raise TokenError("this token is scoped to another session", status=403)
    if claims.role in ("student", "teacher") and claims.participant != participant and not claims.can_view(session):
        raise TokenError("a student token opens only its own view; use your own participant id", status=403)
    return claims


async def my_view(request: web.Request) -> web.StreamResponse:
    session, participant = request.match_info["session"], request.match_info["participant"]
    try:
        _claims(request, session, participant)
    except TokenError as exc:
        return error_response(exc.status, str(exc))
    ctx = request.app[GATEWAY]
    record = ctx.history.get(session)
    if record is None or participant not in record.participants:
        return error_response(404, "nothing recorded for this participant in this session yet; join the class first")
    policy = merged(await ctx.privacy.get(session), record.aggregator.privacy)
    if policy.hides(participant):
        hidden = MyView(session=session, participant=participant, role=record.participants[participant].role,
                        opted_out=policy.is_opted_out(participant), aggregate_only=policy.aggregate_only)
        return web.json_response(text=hidden.model_dump_json(), headers={"Cache-Control": "no-store"})
    state = await live_state(ctx.live, session, record, policy)
    report = build_report(record)
    view = MyView(
        session=session,
        participant=participant,
        role=record.participants[participant].role,
        now=next((p for p in state.participants if p.participant == participant), None),
        summary=report.summary.participants.get(participant),
        timeline=record.timeline.observed_rows(participant=participant)[-MAX_ROWS:],
        questions=[q for q in report.questions if q.participant == participant],
    )
    return web.json_response(text=view.model_dump_json(), headers={"Cache-Control": "no-store"})


async def my_page(request: web.Request) -> web.StreamResponse:
    page = resources.files("services.gateway").joinpath("static", "me.html").read_text(encoding="utf-8")
    return web.Response(text=page.replace(PLACEHOLDER, registry_json(), 1), content_type="text/html",
                        headers={"Cache-Control": "no-cache"})
