"""The gateway's HTTP routes: each is registered together with its OpenAPI entry (one declaration)."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from services.gateway.auth import error_response, reader_claims, viewer_claims
from services.gateway.context import GATEWAY
from services.gateway.dashboard_page import dashboard_page
from services.gateway.export import EXPORT_QUERY, export
from services.gateway.feeds import sse_feed, websocket_feed
from services.gateway.history import SessionRecord
from services.gateway.interactions import ROUTE as INTERACTIONS_ROUTE
from services.gateway.interactions import post_interactions
from services.gateway.lesson import ROUTE as TOPIC_ROUTE
from services.gateway.lesson import put_topic
from services.gateway.live_state import live_state
from services.gateway.me import PAGE as ME_PAGE
from services.gateway.me import ROUTE as ME_ROUTE
from services.gateway.me import my_page, my_view
from services.gateway.models import (
    AggregatePage,
    AlertPage,
    LiveState,
    ParticipantInfo,
    ParticipantPage,
    SessionInfo,
    SessionList,
    TimelinePage,
)
from services.gateway.openapi import NOT_FOUND, SESSION_PARAM, openapi_handler, viewer_route
from services.gateway.privacy_routes import add_privacy_routes
from services.gateway.report import build_attendance, build_report
from shared.analytics.privacy import merged, redact_aggregate, redact_report, visible_alert
from shared.contracts.attendance import Attendance
from shared.contracts.privacy import SessionPrivacy
from shared.contracts.report import Report
from shared.openapi import Param, RouteDoc, add_documented_route
from shared.tokens import TokenError

_NOT_FOUND = '{"error": "no events seen for this session yet; publish to it first"}'
Handler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ApiRoute:
    """One token-protected route under ``/api/sessions/{session}``."""

    path: str
    handler: Handler
    summary: str
    response: type[BaseModel] | None
    kind: str = "json"
    query: tuple[tuple[str, str, str], ...] = ()
    platform: bool = False
    """Also for the platform's backend (platform tokens of the session or the deployment)."""

    def doc(self) -> RouteDoc:
        params = (SESSION_PARAM, *(Param(name, type=typ, description=desc) for name, typ, desc in self.query))
        path = SESSION_PREFIX + self.path
        if self.kind == "websocket":
            return viewer_route("GET", path, self.summary, params=params, status="101",
                                description="Switching protocols; JSON text messages follow")
        if self.kind == "sse":
            return viewer_route("GET", path, self.summary, params=params, content="text/event-stream",
                                description="text/event-stream of JSON messages")
        if self.kind == "file":
            return viewer_route("GET", path, self.summary, params=params, content="application/octet-stream",
                                description="The table as a file: text/csv, application/x-ndjson or "
                                "application/vnd.apache.parquet (chunked)",
                                errors=(("400", "Unknown format or table"), NOT_FOUND))
        errors = () if self.path == "/live" else (NOT_FOUND,)
        return viewer_route("GET", path, self.summary, params=params, response=self.response, errors=errors)


def _info(record: SessionRecord, policy: SessionPrivacy) -> SessionInfo:
    return SessionInfo(
        id=record.id,
        started=record.started,
        last_event=record.last_event,
        ended=record.ended,
        participants=[
            ParticipantInfo(
                id=pid,
                role=p.role,
                status="opted_out" if policy.is_opted_out(pid) else p.status,
                first_seen=p.first_seen,
                last_seen=p.last_seen,
                media_time=0.0 if policy.is_opted_out(pid) else p.media_time,
            )
            for pid, p in record.participants.items()
            if not policy.aggregate_only
        ],
        scores=record.scores,
        duration_s=record.duration_s(),
        aggregate_only=policy.aggregate_only,
    )


def _json(model: BaseModel) -> web.Response:
    return web.json_response(text=model.model_dump_json())


def _record(request: web.Request, session: str) -> SessionRecord:
    record = request.app[GATEWAY].history.get(session)
    if record is None:
        raise web.HTTPNotFound(text=_NOT_FOUND, content_type="application/json")
    return record


async def session_policy(request: web.Request, session: str) -> SessionPrivacy:
    """The session's privacy policy: the store's, with what this gateway's history learnt from the log."""
    ctx = request.app[GATEWAY]
    policy = await ctx.privacy.get(session)
    record = ctx.history.get(session)
    return merged(policy, record.aggregator.privacy) if record is not None else policy


async def session_info(request: web.Request, session: str) -> web.StreamResponse:
    record = _record(request, session)
    return _json(_info(record, await session_policy(request, session)))


async def participants(request: web.Request, session: str) -> web.StreamResponse:
    info = _info(_record(request, session), await session_policy(request, session))
    return _json(ParticipantPage(session=session, participants=info.participants))


async def live(request: web.Request, session: str) -> web.StreamResponse:
    ctx = request.app[GATEWAY]
    policy = await session_policy(request, session)
    return _json(await live_state(ctx.live, session, ctx.history.get(session), policy))


def _bad_query(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _float_query(request: web.Request, name: str, default: float) -> float:
    """A finite number of seconds from the query (``since``); 400 for text, NaN, infinities."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _bad_query(f"query parameter {name} must be a finite number of seconds (e.g. {name}=12.5)")
    return value


def _int_query(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    """A whole number in ``[low, high]`` from the query (``limit``); 400 otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise _bad_query(f"query parameter {name} must be a whole number from {low} to {high} (e.g. {name}=60)")
    return int(text)


async def timeline(request: web.Request, session: str) -> web.StreamResponse:
    record = _record(request, session)
    since = _float_query(request, "since", 0.0)
    policy = await session_policy(request, session)
    if policy.aggregate_only:
        raise web.HTTPForbidden(
            text='{"error": "this session is aggregate-only: per-student timelines are not served; '
            'read /aggregates for the class figures"}', content_type="application/json")
    rows = record.timeline.observed_rows(participant=request.query.get("participant"), since=since)
    return _json(TimelinePage(session=session, rows=[r for r in rows if not policy.hides(r.participant)]))


async def aggregates(request: web.Request, session: str) -> web.StreamResponse:
    record = _record(request, session)
    limit = _int_query(request, "limit", 600, low=1, high=1_000_000)
    policy = await session_policy(request, session)
    items = [redact_aggregate(a, policy) for a in list(record.aggregates)[-limit:]]
    return _json(AggregatePage(session=session, aggregates=items))


async def alerts(request: web.Request, session: str) -> web.StreamResponse:
    record = _record(request, session)
    policy = await session_policy(request, session)
    return _json(AlertPage(session=session, alerts=[a for a in record.alerts if visible_alert(a, policy)]))


async def report(request: web.Request, session: str) -> web.StreamResponse:
    record = _record(request, session)
    return _json(redact_report(build_report(record), await session_policy(request, session)))


async def attendance(request: web.Request, session: str) -> web.StreamResponse:
    record = _record(request, session)
    late = request.query.get("late_after_s")
    threshold = None if late is None else _float_query(request, "late_after_s", 0.0)
    if threshold is not None and threshold < 0:
        raise web.HTTPBadRequest(text='{"error": "late_after_s must not be negative"}', content_type="application/json")
    return _json(build_attendance(record, late_after_s=threshold))


API_ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("", session_info, "Session: participants, counts, duration", SessionInfo),
    ApiRoute("/participants", participants, "Participants seen in the session", ParticipantPage),
    ApiRoute("/live", live, "Latest signals of every participant and the class aggregates", LiveState),
    ApiRoute(
        "/timeline",
        timeline,
        "Per-second timeline rows (replay report shape)",
        TimelinePage,
        query=(("participant", "string", "only this participant"), ("since", "number", "rows with t >= since")),
    ),
    ApiRoute(
        "/aggregates",
        aggregates,
        "Recent class aggregates (class engagement timeline)",
        AggregatePage,
        query=(("limit", "integer", "most recent N, 1 to 1000000 (default 600)"),),
    ),
    ApiRoute("/alerts", alerts, "Alerts raised and cleared", AlertPage),
    ApiRoute("/report", report, "Report of the session so far (replay report shape)", Report, platform=True),
    ApiRoute(
        "/attendance",
        attendance,
        "Join and leave times per participant, attended share, late joiners",
        Attendance,
        query=(("late_after_s", "number", "late threshold in s of session time (default: the gateway's setting)"),),
        platform=True,
    ),
    ApiRoute(
        "/export",
        export,
        "Export a table (timeline, students, events) as CSV, JSON Lines or Parquet (streamed)",
        None,
        kind="file",
        query=EXPORT_QUERY,
        platform=True,
    ),
    ApiRoute("/ws", websocket_feed, "WebSocket feed: snapshot, then every live message", None, kind="websocket"),
    ApiRoute("/sse", sse_feed, "Server-Sent Events feed: snapshot, then every live message", None, kind="sse"),
)
SESSION_PREFIX = "/api/sessions/{session}"


def _protected(route: ApiRoute) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        session = request.match_info["session"]
        secret = request.app[GATEWAY].token_secret
        try:
            if route.platform:
                reader_claims(request, secret=secret, session=session)
            else:
                viewer_claims(request, secret=secret, session=session)
        except TokenError as exc:
            return error_response(exc.status, str(exc))
        return await route.handler(request, session)

    return handler


async def list_sessions(request: web.Request) -> web.StreamResponse:
    try:
        claims = viewer_claims(request, secret=request.app[GATEWAY].token_secret, session=None)
    except TokenError as exc:
        return error_response(exc.status, str(exc))
    record = request.app[GATEWAY].history.get(claims.session)
    policy = await session_policy(request, claims.session)
    return _json(SessionList(sessions=[_info(record, policy)] if record else []))


async def metrics(request: web.Request) -> web.StreamResponse:
    body = generate_latest(request.app[GATEWAY].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _static(name: str, content_type: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        text = resources.files("services.gateway").joinpath("static", name).read_text()
        return web.Response(text=text, content_type=content_type, headers={"Cache-Control": "no-cache"})

    return handler


def _page(path: str, summary: str, content: str) -> RouteDoc:
    return RouteDoc("GET", path, summary, content=content)


def add_gateway_routes(app: web.Application, *, with_metrics: bool = True) -> None:
    """Register every gateway route on ``app`` (which must hold a GatewayContext under GATEWAY)."""
    sessions = viewer_route("GET", "/api/sessions", "Sessions the token may view", response=SessionList)
    add_documented_route(app, sessions, list_sessions)
    for route in API_ROUTES:
        add_documented_route(app, route.doc(), _protected(route))
    add_documented_route(app, INTERACTIONS_ROUTE, post_interactions)
    add_documented_route(app, TOPIC_ROUTE, put_topic)
    add_privacy_routes(app)
    add_documented_route(app, _page("/api/openapi.json", "This document", "application/json"), openapi_handler)
    add_documented_route(
        app, _page("/dashboard", "Teacher dashboard page (?session=S&token=T)", "text/html"), dashboard_page
    )
    app.router.add_get("/static/gateway/dashboard.js", _static("dashboard.js", "application/javascript"))
    app.router.add_get("/static/gateway/dashboard.css", _static("dashboard.css", "text/css"))
    add_documented_route(app, ME_ROUTE, my_view)
    add_documented_route(app, ME_PAGE, my_page)
    app.router.add_get("/static/gateway/me.js", _static("me.js", "application/javascript"))
    app.router.add_get("/static/gateway/me.css", _static("me.css", "text/css"))
    if with_metrics:
        add_documented_route(app, _page("/metrics", "Prometheus exposition", "text/plain"), metrics)
