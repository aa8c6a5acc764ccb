"""Session privacy rules, once: what an opt-out or aggregate-only mode removes from each output.

Used by the aggregation core (``SessionAggregator.privacy``: opted-out input is never admitted),
the aggregator's session driver (its aggregates, alerts and summary), the gateway (live feeds,
REST, reports) and replay. Rules:

* **opt-out**: a participant's scores, lifecycle and interactions are not admitted; from the
  opt-out on they count as having left; they appear in no aggregate, alert, timeline row, live
  row or summary, only in the policy's ``opted_out`` list ("opted out").
* **erasure**: the session is forgotten, and its records from before the erasure (by their own time)
  that arrive later — still in flight on another topic, redelivered — are ignored, so an erased
  session is never rebuilt from them (:class:`Erasures`).
* **aggregate-only**: no per-student row leaves: aggregates keep class figures only (no
  ``participants``, no ``hand_queue``), per-participant alerts, scores, lifecycle and
  interaction messages are not sent, summaries and reports have no per-participant parts.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from shared.analytics.session import SessionAggregator
from shared.analytics.state import Lifecycle
from shared.contracts.events import Alert, ClassAggregate
from shared.contracts.live import AnyLiveMessage, LiveAggregate, LiveAlert, LiveLifecycle, LivePrivacy
from shared.contracts.privacy import PrivacyEvent, SessionPrivacy
from shared.contracts.report import QuestionItem, Report, ReportPrivacy, SessionSummary

AnyLive = AnyLiveMessage

MAX_ERASED = 10_000
"""Erasures remembered (the oldest go first)."""


class Erasures:
    """When each session was erased (bounded): records of a session from before its erasure are ignored."""

    def __init__(self, *, limit: int = MAX_ERASED) -> None:
        self._at: OrderedDict[str, float] = OrderedDict()
        self._limit = limit

    def erase(self, session: str, at: float) -> None:
        self._at[session] = max(at, self._at.get(session, at))
        self._at.move_to_end(session)
        while len(self._at) > self._limit:
            self._at.popitem(last=False)

    def before(self, session: str, ts: float) -> bool:
        """Whether a record of ``session`` at ``ts`` predates the session's erasure."""
        erased = self._at.get(session)
        return erased is not None and ts <= erased


def apply_event(policy: SessionPrivacy, event: PrivacyEvent) -> SessionPrivacy:
    """The policy after ``event`` (an 'erased' event resets it, keeping the erasure time)."""
    if event.kind in ("opted_out", "opted_in") and event.participant:
        return policy.with_opt_out(event.participant, event.kind == "opted_out", now=event.ts)
    if event.kind == "aggregate_only" and event.aggregate_only is not None:
        return policy.model_copy(update={"aggregate_only": event.aggregate_only, "updated": event.ts})
    if event.kind == "erased":  # consent stays: opt-outs and the mode outlive an erasure
        return policy.model_copy(update={"erased_at": event.ts, "updated": event.ts})
    return policy


def merged(a: SessionPrivacy, b: SessionPrivacy) -> SessionPrivacy:
    """Both policies at once (what either hides stays hidden): the store's and a history's view."""
    if not (b.aggregate_only or b.opted_out):
        return a
    return a.model_copy(update={"aggregate_only": a.aggregate_only or b.aggregate_only,
                                "opted_out": sorted(set(a.opted_out) | set(b.opted_out))})


def apply_privacy(agg: SessionAggregator, event: PrivacyEvent) -> None:
    """Feed a privacy change to the aggregation core: an opted-out participant's waiting input is
    dropped and they leave at the opt-out time (so they stop counting in class figures)."""
    before = agg.privacy
    agg.privacy = apply_event(before, event)
    pid = event.participant
    if event.kind != "opted_out" or pid is None or before.is_opted_out(pid):
        return
    a: Any = agg  # the core's buffers, as the snapshot module reads them
    a._pending.pop(pid, None)
    a._lifecycle = [lc for lc in a._lifecycle if lc.participant != pid]
    known = a._participants.get(pid)
    if known is not None:
        a._lifecycle.append(Lifecycle(ts=event.ts, event_id=event.event_id, participant=pid, role=known.role,
                                      kind="left"))


def redact_aggregate(event: ClassAggregate, policy: SessionPrivacy) -> ClassAggregate:
    if policy.aggregate_only:
        return event.model_copy(update={"participants": {}, "hand_queue": []})
    if not policy.opted_out:
        return event
    return event.model_copy(update={
        "participants": {p: w for p, w in event.participants.items() if not policy.hides(p)},
        "hand_queue": [p for p in event.hand_queue if not policy.hides(p)],
    })


def visible_alert(event: Alert, policy: SessionPrivacy) -> bool:
    return not policy.hides(event.participant)


def redact_outputs(
    aggregates: list[ClassAggregate], alerts: list[Alert], policy: SessionPrivacy
) -> tuple[list[ClassAggregate], list[Alert]]:
    """What of a closed window's outputs may leave the aggregator."""
    return [redact_aggregate(a, policy) for a in aggregates], [a for a in alerts if visible_alert(a, policy)]


def redact_summary(summary: SessionSummary, policy: SessionPrivacy) -> SessionSummary:
    if not (policy.aggregate_only or policy.opted_out):
        return summary
    kept = {p: s for p, s in summary.participants.items() if not policy.hides(p)}
    return summary.model_copy(update={"participants": kept})


def redact_questions(items: list[QuestionItem], policy: SessionPrivacy) -> list[QuestionItem]:
    """Questions of hidden participants go; in aggregate-only mode the teacher's stay, without responder."""
    if policy.aggregate_only:
        return [q.model_copy(update={"responder": None}) for q in items if q.role == "teacher"]
    return [
        q if not policy.hides(q.responder) else q.model_copy(update={"responder": None})
        for q in items
        if not policy.hides(q.participant)
    ]


def redact_live(message: AnyLive, policy: SessionPrivacy) -> AnyLive | None:
    """A live message as a viewer may see it (None: not at all)."""
    if isinstance(message, LiveAggregate):
        return LiveAggregate(event=redact_aggregate(message.event, policy))
    if isinstance(message, LiveAlert):
        return message if visible_alert(message.event, policy) else None
    if isinstance(message, LiveLifecycle):
        if message.event.kind == "session_ended":
            return message
        return None if policy.aggregate_only else message  # an opted-out participant's presence stays
    if isinstance(message, LivePrivacy):  # "p opted out" is how the dashboard shows p; never in aggregate-only
        return None if policy.aggregate_only and message.event.participant else message
    return None if policy.hides(message.event.participant) else message


def redact_report(report: Report, policy: SessionPrivacy) -> Report:
    """A report with the session's opt-outs and mode applied (``privacy`` says which)."""
    if not (policy.aggregate_only or policy.opted_out):
        return report
    return report.model_copy(update={
        "participants": [p for p in report.participants if not policy.hides(p.id)],
        "timeline": [r for r in report.timeline if not policy.hides(r.participant)],
        "summary": redact_summary(report.summary, policy),
        "questions": redact_questions(report.questions, policy),
        "transcript": None if report.transcript is None else [
            line for line in report.transcript if not policy.hides(line.participant)
        ],
        "privacy": ReportPrivacy(aggregate_only=policy.aggregate_only,
                                 opted_out=[] if policy.aggregate_only else list(policy.opted_out)),
    })
