"""``DELETE /api/sessions/{session}``: erase a session's data from every store ClassPulse controls.

Teacher or platform token. In order: the policy store and the transports (Redis keys and streams,
or the memory transports of ``classpulse up``: live state, summary, publish epochs, inference
snapshots, media still waiting), this gateway's history and lesson context; then an ``erased``
event on ``classpulse.privacy`` asks the aggregator (session windows, its snapshot table) and
every other gateway to do the same. The answer lists what was erased, what was requested, and
what cannot be erased (Kafka's log segments, scraped metrics, inference workers' in-memory state),
with when it goes by itself. Opt-outs and the aggregate-only mode stay in force (consent is not
analytics data), with the erasure time: events from before it are ignored if read again.
"""

from __future__ import annotations

from aiohttp import web

from services.gateway.auth import error_response
from services.gateway.context import GATEWAY, GatewayContext
from services.gateway.models import ErrorBody
from services.gateway.openapi import SESSION_PARAM
from shared.contracts.codec import EventCodec
from shared.contracts.privacy import ErasedItem, ErasureReport, PrivacyActor, PrivacyEvent, SessionPrivacy
from shared.contracts.timing import wall_clock
from shared.contracts.topics import EVENT_TOPICS, PRIVACY
from shared.log import get_logger, pii
from shared.openapi import RouteDoc
from shared.tokens import Claims, TokenError, bearer, verify_token

_log = get_logger(__name__)
ERASE_ROUTE = RouteDoc(
    "DELETE",
    "/api/sessions/{session}",
    "Erase the session's data from every store ClassPulse controls; says what it could not erase",
    response=ErasureReport,
    security=("bearer",),
    error_model=ErrorBody,
    errors=(
        ("401", "Missing, malformed or expired token"),
        ("403", "Not a teacher or platform token of this session"),
        ("503", "A store is unavailable; retry (erasure is idempotent)"),
    ),
    params=(SESSION_PARAM,),
)
_CODEC = EventCodec(PrivacyEvent)


def actor(claims: Claims) -> PrivacyActor:
    """Who made a privacy change, by token role (a viewer never may)."""
    return "student" if claims.role == "student" else ("platform" if claims.role == "platform" else "teacher")


async def publish_change(ctx: GatewayContext, event: PrivacyEvent) -> bool:
    """Publish a privacy event on ``classpulse.privacy``; False when the log is unavailable (counted)."""
    if ctx.events is None:
        return True  # no event log (a gateway without one): nothing else to tell
    try:
        await ctx.events.publish(PRIVACY.name, event.session, _CODEC.encode(event))
    except Exception as exc:  # the broker: the client retries, the change is idempotent
        ctx.metrics.errors_total.labels("gateway", "privacy_publish").inc()
        _log.error("privacy event state %s -> %s: %s", "stored", "unpublished", type(exc).__name__)
        return False
    return True


def _days(seconds: int) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds / 3600:g} hours"


def _not_erased(ctx: GatewayContext, *, embedded: bool) -> list[ErasedItem]:
    topics = ", ".join(t.name for t in EVENT_TOPICS)
    log = (
        ErasedItem(store="memory", what=f"the embedded event log ({topics})",
                   until="pushed out by newer events (CLASSPULSE_MEMORY_EVENT_RETENTION per topic) or a restart")
        if embedded
        else ErasedItem(store="kafka", what=f"events of the session in {topics} (log segments cannot be edited; "
                        "interaction text only with CLASSPULSE_KEEP_TEXT=true)",
                        until=f"retention: {_days(ctx.retention_s)} (retention.ms={ctx.retention_s * 1000})")
    )
    return [
        log,
        ErasedItem(store="inference", what="participants' in-memory inference state (no media arrives for them)",
                   until="forgotten after CLASSPULSE_INFERENCE_STATE_IDLE_S without media"),
        ErasedItem(store="prometheus", what="class metrics already scraped (labelled with the session id)",
                   until="Prometheus' own retention; this gateway removed its series"),
    ]


async def erase_session(ctx: GatewayContext, session: str, *, by: PrivacyActor) -> ErasureReport | None:
    """Erase ``session``; None when a store was unavailable (the caller answers 503)."""
    now = wall_clock()

    def tombstone(stored: SessionPrivacy | None) -> SessionPrivacy:
        policy = stored or SessionPrivacy(session=session)
        return policy.model_copy(update={"erased_at": now, "updated": now})

    try:
        erased = await ctx.privacy.store.erase(session)
        ctx.privacy.remember(await ctx.privacy.store.update(session, tombstone))
    except Exception as exc:
        ctx.metrics.errors_total.labels("gateway", "privacy_store").inc()
        _log.error("session erasure state %s -> %s: %s", "requested", "failed", type(exc).__name__)
        return None
    known = ctx.history.erase(session, at=now)
    erased.append(ErasedItem(store="gateway", what="this gateway's session history (timeline, aggregates, alerts, "
                             "participants, counts) and class gauges", count=int(known)))
    erased.append(ErasedItem(store="gateway", what="lesson context (topic, teacher messages' vectors)",
                             count=int(ctx.text.forget(session))))
    event = PrivacyEvent(event_id=PrivacyEvent.make_id(session, "erased", None, now), session=session,
                         kind="erased", by=by, ts=now)
    if not await publish_change(ctx, event):
        return None
    embedded = any(item.store == "memory" for item in erased)
    requested = [] if ctx.events is None else [
        ErasedItem(store="aggregator", what="session windows, alert state and its snapshot (faust table)"),
        ErasedItem(store="gateway", what="the history of every other gateway"),
    ]
    _log.info("session data state %s -> %s", "kept", "erased", extra=pii(session=session))
    return ErasureReport(session=session, erased_at=now, erased=erased, requested=requested,
                         not_erased=_not_erased(ctx, embedded=embedded))


async def delete_session(request: web.Request) -> web.StreamResponse:
    ctx, session = request.app[GATEWAY], request.match_info["session"]
    try:
        claims = verify_token(bearer(request.headers.get("Authorization")), secret=ctx.token_secret)
    except TokenError as exc:
        return error_response(exc.status, str(exc))
    if claims.session != session:
        return error_response(403, "this token is scoped to another session")
    if claims.role not in ("teacher", "platform"):
        return error_response(403, "only a teacher or platform token erases a session's data")
    report = await erase_session(ctx, session, by=actor(claims))
    if report is None:
        return error_response(503, "a store is unavailable; nothing is promised erased, retry the same request")
    return web.json_response(text=report.model_dump_json())
