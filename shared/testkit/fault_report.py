"""What a fault did, read back from the topics from the start: :class:`FaultReport`.

:func:`read_topic` reads every event of one session from a topic, beginning to current end;
:func:`build_report` turns the scores, class aggregates and alerts of a run into the figures the
fault tier asserts and ``bench/faults.py`` prints (see each field).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka import AIOKafkaConsumer
from pydantic import BaseModel

from shared.contracts.codec import EventCodec
from shared.contracts.events import Alert, ClassAggregate, ScoreEvent

M = TypeVar("M", bound=BaseModel)
FALSE_ALERT_KINDS = ("away", "camera_off")
CLASS_WINDOW_S = 1.0
_VOLATILE = {"timing", "producer"}  # differ between two deliveries of the same score by design


async def read_topic(
    bootstrap: str, topic: str, session: str, model: type[M], *, need_partitions: bool = False
) -> list[M]:
    """Every ``model`` event keyed ``session`` in ``topic``, from the beginning to each partition's end now.

    ``need_partitions``: raise when no partition gets assigned (else: no events)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    codec = EventCodec(model)
    out: list[M] = []
    try:
        for _ in range(100):
            parts = sorted(consumer.assignment())
            if parts:
                break
            await asyncio.sleep(0.1)
        else:
            if need_partitions:
                raise RuntimeError(f"no partitions of {topic} assigned")
            return out
        end = await consumer.end_offsets(parts)
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            batches = await consumer.getmany(*parts, timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for rec in records:
                    if rec.key is not None and rec.key.decode() == session and rec.value is not None:
                        out.append(codec.decode(rec.value))
    finally:
        await consumer.stop()
    return out


@dataclass
class FaultReport:
    """One fault run. Times are seconds after the fault ended; None: never within the run."""

    fault: str
    healthy_after_s: dict[str, float | None] = field(default_factory=dict)
    """Per service: its health URL answered 200 again (0.0: it never stopped answering)."""
    resumed_after_s: dict[str, float | None] = field(default_factory=dict)
    """Per stage: output about media captured after the fault: ``inference`` (the last participant's
    first such score), ``aggregator`` (the first 1 s class window starting after it), ``gateway``
    (its score count grows again)."""
    frames_in: int = 0
    """Video frames ingest published to Redis (its ``classpulse_messages_total``)."""
    scores: int = 0
    """Distinct score event ids of the session on ``classpulse.scores``."""
    frames_scored: int = 0
    """Distinct video steps among them."""
    score_records: int = 0
    """Score records on the topic (``- scores`` = duplicates)."""
    conflicting_ids: int = 0
    """Event ids published more than once with different values."""
    dropped_counted: int = 0
    """Media the inference workers counted as dropped (``classpulse_media_dropped_total``)."""
    gateway_scores: int | None = None
    """Scores the gateway kept (its session ``scores``); None: session unknown to it."""
    gateway_left: str = ""
    """Participants the gateway shows as ``left`` after the publishers DELETEd, e.g. ``3/3``."""
    windows: int = 0
    windows_missing: int = 0
    """1 s class windows missing between the session's first and last."""
    false_alerts: list[str] = field(default_factory=list)
    """``kind participant@at`` of every raised ``away``/``camera_off`` alert (the clip never leaves)."""
    camera_off_steps: int = 0
    """Distinct audio-only steps (no frame came for a while: "camera off"; the clip's camera never is)."""
    timelines: dict[str, str] = field(default_factory=dict)
    """Per participant with an audio-only or a not-in-frame step: its steps as runs of one kind
    (:func:`step_runs`), what an away or camera_off alert would have been raised on."""
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    """Per service: its exit status on SIGTERM at the end (None: had to be killed)."""
    forced_stops: list[str] = field(default_factory=list)
    """Services whose stop ran past ``CLASSPULSE_STOP_TIMEOUT_S`` and was forced (exit 0 all the same)."""
    died: list[str] = field(default_factory=list)
    """Services that exited during the run without being killed by the harness."""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)
    """Fault-specific counts (double_publish: ``double_created``, ``ingest_resources``, ``late_status``)."""

    @property
    def duplicates(self) -> int:
        return self.score_records - self.scores

    @property
    def frames_lost(self) -> int:
        """Frames published that got no score and were not counted as dropped."""
        return max(0, self.frames_in - self.frames_scored - self.dropped_counted)


def score_figures(report: FaultReport, scores: Iterable[ScoreEvent]) -> None:
    """Distinct ids, records, and ids whose copies disagree (values other than timing/producer)."""
    seen: dict[str, dict[str, object]] = {}
    conflicts: set[str] = set()
    records = 0
    scores_list = list(scores)
    for ev in scores_list:
        records += 1
        values = ev.model_dump(exclude=_VOLATILE)
        first = seen.setdefault(ev.event_id, values)
        if first != values:
            conflicts.add(ev.event_id)
    report.score_records = records
    report.scores = len(seen)
    report.frames_scored = sum(1 for v in seen.values() if int(str(v["seq"])) % 2 == 0)
    report.conflicting_ids = len(conflicts)
    report.camera_off_steps = sum(1 for v in seen.values() if int(str(v["seq"])) % 2 == 1)
    for participant in sorted({ev.participant for ev in scores_list}):
        own = [ev for ev in scores_list if ev.participant == participant]
        if any(step_kind(ev) != "in frame" for ev in own):
            report.timelines[participant] = step_runs(own)
    for event_id in sorted(conflicts)[:5]:  # which fields differ: the first thing to look at
        copies = [ev.model_dump(exclude=_VOLATILE) for ev in scores_list if ev.event_id == event_id]
        fields = sorted({k for c in copies[1:] for k in c if c[k] != copies[0][k]})
        report.notes.append(f"{event_id} differs in {', '.join(fields)} ({len(copies)} copies)")


def window_figures(report: FaultReport, aggregates: Iterable[ClassAggregate]) -> None:
    starts = sorted({round(a.window.start, 3) for a in aggregates
                     if a.window.kind == "tumbling" and a.window.size_s == CLASS_WINDOW_S})
    report.windows = len(starts)
    report.windows_missing = sum(max(0, round((b - a) / CLASS_WINDOW_S) - 1) for a, b in itertools.pairwise(starts))


def alert_figures(report: FaultReport, alerts: Iterable[Alert]) -> None:
    report.false_alerts = sorted({f"{a.kind} {a.participant}@{a.at:.0f}" for a in alerts
                                  if a.state == "raised" and a.kind in FALSE_ALERT_KINDS})


def step_kind(ev: ScoreEvent) -> str:
    """``audio-only`` (no frame came: camera off), ``in frame`` or ``not in frame`` (a frame analysed)."""
    if ev.seq % 2:
        return "audio-only"
    return "in frame" if ev.present else "not in frame"


def step_runs(scores: Iterable[ScoreEvent], *, gap_s: float = 1.5) -> str:
    """A participant's distinct steps in media order as runs of one kind, gaps over ``gap_s`` between them:
    ``in frame x40 0.0-8.0 (w1) | gap 3.1 s | audio-only x12 11.1-14.0 (w1)``: after each run, the
    producers of every copy of its steps."""
    by_id: dict[str, ScoreEvent] = {}
    producers: dict[str, set[str]] = {}
    for ev in scores:
        by_id.setdefault(ev.event_id, ev)
        producers.setdefault(ev.event_id, set()).add(ev.producer or "?")
    runs: list[tuple[str, list[ScoreEvent]]] = []
    last: float | None = None
    for ev in sorted(by_id.values(), key=lambda e: (e.media_time, e.seq)):
        kind = step_kind(ev)
        if last is not None and ev.media_time - last > gap_s:
            runs.append((f"gap {ev.media_time - last:.1f} s", []))
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(ev)
        else:
            runs.append((kind, [ev]))
        last = ev.media_time
    out = []
    for kind, evs in runs:
        if not evs:
            out.append(kind)
            continue
        names = ",".join(sorted(set().union(*(producers[ev.event_id] for ev in evs))))
        out.append(f"{kind} x{len(evs)} {evs[0].media_time:.1f}-{evs[-1].media_time:.1f} ({names})")
    return " | ".join(out)


def first_after(times: Iterable[float], t: float) -> float | None:
    later = [x - t for x in times if x >= t]
    return min(later) if later else None


def inference_resumed(scores: Iterable[ScoreEvent], fault_end: float) -> float | None:
    """Seconds from ``fault_end`` until every participant had a score of media captured after it."""
    per: dict[str, float] = {}
    participants: set[str] = set()
    for ev in scores:
        participants.add(ev.participant)
        stage = ev.timing.stage("inference")
        if ev.timing.capture_ts >= fault_end and stage is not None:
            per[ev.participant] = min(per.get(ev.participant, float("inf")), stage.emitted - fault_end)
    if not participants or set(per) != participants:
        return None
    return max(per.values())


def aggregator_resumed(aggregates: Iterable[ClassAggregate], fault_end: float, origin: float) -> float | None:
    """Seconds from ``fault_end`` until the first 1 s window starting after it was emitted (``origin``: the
    session's time zero on the wall clock, from the window ids)."""
    emitted = []
    for a in aggregates:
        if a.window.kind != "tumbling" or a.window.size_s != CLASS_WINDOW_S or origin + a.window.start < fault_end:
            continue
        stage = a.timing.stage("aggregator")
        if stage is not None:
            emitted.append(stage.emitted)
    return first_after(emitted, fault_end)


def metric_sum(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of one Prometheus metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if labels and not all(f'{k}="{v}"' in head for k, v in labels.items()):
            continue
        try:
            total += float(value)
        except ValueError:
            continue
    return total
