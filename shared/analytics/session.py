"""The aggregation core: one session's windows, participation figures and alerts (no I/O).

Used by the aggregator service (its session driver, under the faust app or the plain
Kafka consumer, also in-process in ``classpulse up``), by the gateway's live history
(reports of a running session) and by ``classpulse replay`` (files and event logs).

Time model
----------
* Event time = ``event.timing.capture_ts`` (epoch s). Session time = event time minus the
  session origin: the explicit ``origin`` or the earliest event/lifecycle time seen before
  anything was closed.
* Events may arrive out of order by up to ``lateness_s``. ``advance(now)`` finalizes every
  event older than the *frontier* ``now - lateness_s - max_gap_s`` (in time order, so the
  result does not depend on arrival order), then closes the windows that end before it.
  An event arriving more than ``lateness_s`` after ``now`` has passed its time is counted in
  :attr:`SessionAggregator.late_events` and ignored; a repeated ``event_id`` is counted in
  :attr:`SessionAggregator.duplicate_events` and ignored.
* One score event covers one analysis step: it lasts until the participant's next event when
  that comes within ``max_gap_s``, else ``step_s``. Talk, presence and attention are durations.
"""

from __future__ import annotations

import bisect
import math
from typing import Literal

from shared.analytics import attendance as stays
from shared.analytics.alerts import AlertBook, alert_order
from shared.analytics.config import AggregationConfig
from shared.analytics.interactions import InteractionBook
from shared.analytics.state import Cell, Lifecycle, Participant, Sample
from shared.analytics.summary import build_summary
from shared.analytics.windows import WindowKey, build_aggregate, class_attentive_ratio
from shared.contracts.attendance import Attendance
from shared.contracts.events import Alert, ClassAggregate, LifecycleEvent, Role, ScoreEvent
from shared.contracts.interactions import InteractionCounts, InteractionEvent
from shared.contracts.privacy import SessionPrivacy
from shared.contracts.report import QuestionItem, SessionSummary

_EPS = 1e-9
PendingInteraction = tuple[float, str, Role, int, int]
"""(ts epoch, participant, role, questions, messages) not yet put into a window's buckets."""
Outputs = tuple[list[ClassAggregate], list[Alert]]


class SessionAggregator:
    """Windows, participation figures and alerts of one session."""

    def __init__(self, *, session: str, config: AggregationConfig, origin: float | None = None) -> None:
        self.session = session
        self.config = config
        self.origin: float | None = origin
        self._origin_fixed = False
        self._min_seen = math.inf
        self.watermark = -math.inf
        """Latest score capture time seen (epoch s): a driver without a wall clock advances to it."""
        self._last_now = -math.inf
        self.late_events = 0
        self.duplicate_events = 0
        self.ended = False
        self.ended_at: float | None = None
        """Time (epoch s) of the session_ended lifecycle event, once seen."""
        self._seen: dict[str, float] = {}
        self._pending: dict[str, list[Sample]] = {}
        self._lifecycle: list[Lifecycle] = []
        self._participants: dict[str, Participant] = {}
        self._dip_buckets: dict[int, dict[str, Cell]] = {}
        self._open: dict[WindowKey, dict[str, Cell]] = {}
        self._last_t: float | None = None
        self._next_tumbling: dict[float, int] = {size: 0 for size in config.tumbling_sizes_s}
        self._next_hopping = 0
        self._next_dip_bucket = 0
        self._dip_since: float | None = None
        self._silence_since: float | None = None
        self._teacher_end: float | None = None
        self._awaiting_answer = False
        self._waits: list[tuple[float, float]] = []
        self.alerts = AlertBook(session=session)
        self._out_alerts: list[Alert] = []
        self._last_tick = -math.inf
        self.book = InteractionBook(response_max_s=config.response_max_s)
        """Interactions: seen ids, questions, student responses (snapshotted with the session)."""
        self._pending_interactions: list[PendingInteraction] = []
        self.privacy = SessionPrivacy(session=session)
        """Opt-outs and mode (``shared.analytics.privacy.apply_privacy``): opted-out input is never admitted."""

    # ------------------------------------------------------------------ input
    def add_score(self, event: ScoreEvent) -> None:
        """Buffer one score event (idempotent by ``event_id``; too-late events are counted and ignored)."""
        sample = Sample.of(event)
        if event.participant in self.privacy.opted_out or not self._admit(sample.event_id, sample.ts):
            return
        self.watermark = max(self.watermark, sample.ts)
        bisect.insort(self._pending.setdefault(sample.participant, []), sample, key=Sample.order)

    def add_lifecycle(self, event: LifecycleEvent) -> None:
        """Buffer one lifecycle change (same idempotency and lateness rules as scores).

        Lifecycle events come from another topic than scores, so they do not move the
        watermark; 'session_ended' is never late (it only marks the session for its final flush).
        """
        if event.kind == "session_ended" and not self.ended:
            self.ended = True
            self.ended_at = event.ts
        if event.participant in self.privacy.opted_out and event.kind != "session_ended":
            return
        if not self._admit(event.event_id, event.ts):
            return
        self._lifecycle.append(Lifecycle(ts=event.ts, event_id=event.event_id, participant=event.participant,
                                         role=event.role, kind=event.kind))

    @property
    def questions_by_role(self) -> dict[str, int]:
        return self.book.by_role

    @property
    def duplicate_interactions(self) -> int:
        return self.book.duplicates

    def add_interaction(self, event: InteractionEvent) -> bool:
        """Count one interaction event (chat, question ...); False for a repeated ``event_id``.

        Counted on arrival in the session totals (no lateness: a platform may deliver chat late);
        also put into the window buckets that are still open when its time closes. Only the
        derived fields are read (``is_question``, ``words``, ``on_topic``).
        """
        if event.participant in self.privacy.opted_out:
            return False
        p = self._participants.setdefault(event.participant, Participant(role=event.role))
        if not self.book.add(event, p):
            return False
        if event.asks or event.written:
            self._pending_interactions.append(
                (event.ts, event.participant, event.role, int(event.asks), int(event.written)))
        return True

    def questions(self) -> list[QuestionItem]:
        """Questions asked so far (session times; the report's question list)."""
        origin = self.origin if self.origin is not None else (self._min_seen if self._min_seen != math.inf else 0.0)
        return self.book.question_items(origin)

    def interaction_counts(self, participant: str) -> InteractionCounts:
        """A participant's interaction totals so far (zeros when none)."""
        p = self._participants.get(participant)
        if p is None:
            return InteractionCounts()
        return InteractionCounts(
            questions=p.questions, chat_messages=p.chat_messages, words_spoken=p.words_spoken,
            on_topic_ratio=p.on_topic_messages / p.judged_messages if p.judged_messages else None,
        )

    def _admit(self, event_id: str, ts: float) -> bool:
        if event_id in self._seen:
            self.duplicate_events += 1
            return False
        if ts < self._last_now - self.config.lateness_s:
            self.late_events += 1
            return False
        self._seen[event_id] = ts
        self._min_seen = min(self._min_seen, ts)
        return True

    # ------------------------------------------------------------------ closing
    def advance(self, now: float) -> Outputs:
        """Close every window that ended before ``now - lateness`` (``now`` in epoch s, event clock)."""
        if self._last_now == math.inf:
            return [], []  # flushed: everything is closed (records read again after the end change nothing)
        self._last_now = max(self._last_now, now)
        return self._close(self._last_now - self.config.close_delay_s, final=False)

    def flush(self) -> Outputs:
        """Close everything (session end); later events count as late."""
        self._last_now = math.inf
        return self._close(math.inf, final=True)

    def _close(self, frontier_epoch: float, *, final: bool) -> Outputs:
        if not self._origin_fixed:
            if self._min_seen == math.inf or (not final and self._min_seen >= frontier_epoch):
                return [], []
            if self.origin is None:
                self.origin = self._min_seen
            self._origin_fixed = True
        origin = self._origin()
        frontier = frontier_epoch - origin
        self._out_alerts = []
        for t, _, _, _, item, dur in self._finalizable(frontier, origin):
            self._tick(t)
            if isinstance(item, Sample):
                self._apply_sample(item, t, dur)
            else:
                self._apply_lifecycle(item, t)
        if final:
            if self._last_t is not None:
                self._tick(max(p.last_end or 0.0 for p in self._participants.values()))
            limit = 0 if self._last_t is None else math.floor(self._last_t / self.config.bucket_s) + 1
        else:
            self._tick(frontier)
            limit = math.floor(frontier / self.config.bucket_s + _EPS)
        self._interactions_into_buckets(frontier, origin, final=final)
        self._attention(limit)
        aggregates = self._windows(limit, final=final)
        self._prune(frontier_epoch)
        alerts = sorted(self._out_alerts, key=alert_order)
        self._out_alerts = []
        return aggregates, alerts

    def _interactions_into_buckets(self, frontier: float, origin: float, *, final: bool) -> None:
        """Put the interactions whose time has closed into the windows still open (session time)."""
        keep: list[PendingInteraction] = []
        for item in self._pending_interactions:
            ts, pid, role, questions, messages = item
            t = ts - origin
            if t >= frontier and not final:
                keep.append(item)
                continue
            k = math.floor(max(0.0, t) / self.config.bucket_s + _EPS)
            for key in self._window_keys(k):
                kind, size, first = key
                done = self._next_hopping if kind == "hopping" else self._next_tumbling[self._size_s(size)]
                if first < done:
                    continue  # that window was emitted already; the session totals have it
                cell = self._open.setdefault(key, {}).setdefault(pid, Cell(role=role))
                cell.questions += questions
                cell.messages += messages
        self._pending_interactions = keep

    def _size_s(self, size: int) -> float:
        """The configured tumbling size (s) of a window ``size`` buckets long."""
        for size_s in self.config.tumbling_sizes_s:
            if self.config.buckets(size_s) == size:
                return size_s
        raise KeyError(size)

    def _origin(self) -> float:
        assert self.origin is not None
        return self.origin

    def _finalizable(
        self, frontier: float, origin: float
    ) -> list[tuple[float, int, str, int, Sample | Lifecycle, float]]:
        cfg = self.config
        items: list[tuple[float, int, str, int, Sample | Lifecycle, float]] = []
        for pid, pending in self._pending.items():
            if not pending or pending[0].ts >= frontier + origin:
                continue
            k = bisect.bisect_left(pending, frontier + origin, key=lambda s: s.ts)
            for i in range(k):
                s = pending[i]
                dur = cfg.step_s
                if i + 1 < len(pending):
                    gap = round(pending[i + 1].ts - s.ts, 6)
                    if gap <= cfg.max_gap_s + _EPS:
                        dur = gap
                items.append((round(s.ts - origin, 6), 1, pid, s.seq, s, dur))
            del pending[:k]
        keep: list[Lifecycle] = []
        for lc in self._lifecycle:
            if lc.ts - origin < frontier:
                items.append((round(lc.ts - origin, 6), 0, lc.participant, 0, lc, 0.0))
            else:
                keep.append(lc)
        self._lifecycle = keep
        items.sort(key=lambda it: (it[0], it[1], it[2], it[3]))
        return items

    def _emit(self, alert: Alert | None) -> None:
        if alert is not None:
            self._out_alerts.append(alert)

    # ------------------------------------------------------------------ event effects
    def _apply_sample(self, s: Sample, t: float, dur: float) -> None:
        cfg, origin = self.config, self._origin()
        p = self._participants.setdefault(s.participant, Participant(role=s.role))
        p.role = s.role
        stays.media(p, t, t + dur)
        p.left = False
        if p.joined_at is None:
            p.joined_at = t
        self._last_t = t if self._last_t is None else max(self._last_t, t)
        k = math.floor(t / cfg.bucket_s + _EPS)
        cells = [self._dip_buckets.setdefault(k, {}).setdefault(s.participant, Cell(role=s.role))]
        cells += [self._open.setdefault(key, {}).setdefault(s.participant, Cell(role=s.role))
                  for key in self._window_keys(k)]
        p.add(cells, dur=dur, sample=s)
        if s.role == "student" and self._silence_since is None:
            self._silence_since = t
        if s.speaking:
            if p.last_speech_end is None or t - p.last_speech_end > cfg.turn_gap_s:
                p.turns += 1
                if s.role == "student":
                    self.book.add_response(origin + t, s.participant)
                for cell in cells:
                    cell.turns += 1
            p.last_speech_end = t + dur
            if s.role == "teacher":
                self._teacher_end = max(self._teacher_end or 0.0, t + dur)
                self._awaiting_answer = True
            else:
                if self._awaiting_answer and self._teacher_end is not None:
                    wait = t - self._teacher_end
                    if -_EPS <= wait <= cfg.wait_time_max_s:
                        self._waits.append((t, max(0.0, wait)))
                self._awaiting_answer = False
                self._emit(self.alerts.clear("silence", None, at=t, origin=origin))
                self._silence_since = t + dur
        if s.hand and not p.hand:
            p.hand_raises += 1
            for cell in cells:
                cell.hand_raises += 1
            p.hand_since = t
        if not s.hand:
            p.hand_since = None
        p.hand = s.hand
        for cell in cells:
            cell.role = s.role
            cell.hand_any = cell.hand_any or s.hand
            cell.hand_last = s.hand
            cell.hand_since = p.hand_since
        # A gap in the steps interrupts the evidence: an absence (or a camera off only the steps say) not yet
        # alerted counts again from this step (a pause held the steps in between; late, they never came).
        interrupted = p.last_end is not None and t - p.last_end > self.config.evidence_gap_s + _EPS
        if s.present:
            self._emit(self.alerts.clear("away", s.participant, at=t, origin=origin))
            p.absent_since = None
        elif p.absent_since is None or (interrupted and not self.alerts.is_open("away", s.participant)):
            p.absent_since = t
        if s.camera_on:
            if not p.camera_off_announced:
                self._emit(self.alerts.clear("camera_off", s.participant, at=t, origin=origin))
                p.camera_off_since = None
        elif p.camera_off_since is None or (
            interrupted and not p.camera_off_announced and not self.alerts.is_open("camera_off", s.participant)
        ):
            p.camera_off_since = t
        p.last_end = t + dur

    def _apply_lifecycle(self, lc: Lifecycle, t: float) -> None:
        origin = self._origin()
        if lc.kind == "session_ended":
            return  # the session's, nobody's own change (ended/ended_at were set on arrival)
        p = self._participants.setdefault(lc.participant, Participant(role=lc.role))
        if lc.kind == "joined":
            p.role = lc.role
            stays.joined(p, t)
            p.left = False
            if lc.role == "student" and self._silence_since is None:
                self._silence_since = t
        elif lc.kind == "left":
            stays.left(p, t)
            p.left = True
            p.hand = False
            p.hand_since = None
            p.absent_since = None
            p.camera_off_since = None
            p.camera_off_announced = False
            self._emit(self.alerts.clear("away", lc.participant, at=t, origin=origin))
            self._emit(self.alerts.clear("camera_off", lc.participant, at=t, origin=origin))
        elif lc.kind == "camera_off":
            p.camera_off_announced = True
            if p.camera_off_since is None:
                p.camera_off_since = t
        elif lc.kind == "camera_on":
            p.camera_off_announced = False
            p.camera_off_since = None
            self._emit(self.alerts.clear("camera_off", lc.participant, at=t, origin=origin))

    def _tick(self, t: float) -> None:
        """Raise the alerts whose condition has lasted long enough by session time ``t``.

        Runs once per distinct time: every raise is dated ``since + threshold``, so a condition
        that starts at ``t`` itself is found, with the same dates, by the next tick.
        """
        if t == self._last_tick:
            return
        self._last_tick = t
        cfg, origin = self.config, self._origin()
        for pid, p in self._participants.items():
            if p.left:
                continue
            # Away needs evidence (steps saying "not in frame") for the whole threshold: the condition holds up
            # to the participant's last step, never beyond it by the clock alone. Sending nothing is not evidence:
            # a gap in the scores is the pipeline's (a broker pause, stale frames dropped after it, a worker
            # restart; the steps that end the absence may still be on their way), and a stream that really stops
            # is ingest's to report (camera_off, left).
            seen_until = t if p.last_end is None else min(t, p.last_end)
            since = p.absent_since
            if (since is not None and seen_until - since >= cfg.away_after_s - _EPS
                    and not self.alerts.is_open("away", pid)):
                self._emit(self.alerts.raise_("away", pid, since=since, at=since + cfg.away_after_s,
                                              origin=origin, threshold=cfg.away_after_s))
            # The same for a camera the steps say is off (audio-only steps); one that ingest announced off stays
            # off by the clock until ingest says it is on again.
            cam = p.camera_off_since
            cam_until = t if p.camera_off_announced else seen_until
            if cam is not None and cam_until - cam >= cfg.camera_off_after_s - _EPS:
                self._emit(self.alerts.raise_("camera_off", pid, since=cam, at=cam + cfg.camera_off_after_s,
                                              origin=origin, threshold=cfg.camera_off_after_s))
        quiet = self._silence_since
        if quiet is not None and t - quiet >= cfg.silence_after_s - _EPS:
            self._emit(self.alerts.raise_("silence", None, since=quiet, at=quiet + cfg.silence_after_s,
                                          origin=origin, minutes=cfg.silence_after_s / 60.0))

    def _attention(self, limit: int) -> None:
        """Run the class attention-dip alert over the buckets closed up to ``limit`` (exclusive)."""
        cfg, origin = self.config, self._origin()
        for k in sorted(k for k in self._dip_buckets if self._next_dip_bucket <= k < limit):
            level = class_attentive_ratio(self._dip_buckets[k])
            if level is None:
                continue
            start = k * cfg.bucket_s
            if level < cfg.attention_threshold:
                if self._dip_since is None:
                    self._dip_since = start
                if start + cfg.bucket_s - self._dip_since >= cfg.attention_dip_s - _EPS:
                    self._emit(self.alerts.raise_(
                        "attention_dip", None, since=self._dip_since, at=self._dip_since + cfg.attention_dip_s,
                        origin=origin, threshold=cfg.attention_threshold * 100, duration=cfg.attention_dip_s))
            else:
                self._dip_since = None
                self._emit(self.alerts.clear("attention_dip", None, at=start, origin=origin))
        self._next_dip_bucket = max(self._next_dip_bucket, limit)

    def _windows(self, limit: int, *, final: bool) -> list[ClassAggregate]:
        """Aggregates of every tumbling and hopping window closed up to bucket ``limit``."""
        cfg = self.config
        if self._last_t is None:
            return []
        last_k = math.floor(self._last_t / cfg.bucket_s + _EPS)
        out: list[ClassAggregate] = []

        def due(first: int, size: int) -> bool:
            return first <= last_k and (final or first + size <= limit)

        for size_s in cfg.tumbling_sizes_s:
            size = cfg.buckets(size_s)
            while True:
                first = self._next_tumbling[size_s] = self._skip_empty("tumbling", size, self._next_tumbling[size_s])
                if not due(first, size):
                    break
                out.append(self._aggregate("tumbling", first, first + size))
                self._next_tumbling[size_s] = first + size
        if cfg.hopping_size_s is not None:
            size, step = cfg.buckets(cfg.hopping_size_s), cfg.buckets(cfg.hopping_step_s)
            while True:
                first = self._next_hopping = self._skip_empty("hopping", size, self._next_hopping)
                if not due(first, size):
                    break
                out.append(self._aggregate("hopping", first, first + size))
                self._next_hopping = first + step
        out.sort(key=lambda a: (a.window.end, a.window.size_s, a.window.kind))
        return out

    def _skip_empty(self, kind: str, size: int, first: int) -> int:
        """The next window start to emit at or after ``first``: ``first`` itself when it holds data or the
        next data is at most ``empty_windows_max_s`` away (empty windows say "nobody observed"), else the
        next window that holds data (a long pause, or one wild clock, never loops over empty windows)."""
        if (kind, size, first) in self._open:
            return first
        later = [f for k, s, f in self._open if k == kind and s == size and f > first]
        if not later:
            return first
        nearest = min(later)
        if (nearest - first) * self.config.bucket_s <= self.config.empty_windows_max_s + _EPS:
            return first  # a short class-wide gap: its windows are emitted, empty (nobody observed)
        return nearest

    def _window_keys(self, k: int) -> list[WindowKey]:
        """The open windows that bucket ``k`` belongs to."""
        cfg = self.config
        keys: list[WindowKey] = []
        for size_s in cfg.tumbling_sizes_s:
            size = cfg.buckets(size_s)
            keys.append(("tumbling", size, (k // size) * size))
        if cfg.hopping_size_s is not None:
            size, step = cfg.buckets(cfg.hopping_size_s), cfg.buckets(cfg.hopping_step_s)
            j = max(0, -(-(k - size + 1) // step))
            while j * step <= k:
                keys.append(("hopping", size, j * step))
                j += 1
        return keys

    def _aggregate(self, kind: Literal["tumbling", "hopping"], first: int, last: int) -> ClassAggregate:
        b = self.config.bucket_s
        start, end = round(first * b, 6), round(last * b, 6)
        waits = [w for t, w in self._waits if t < end]
        origin = self._origin()
        latencies = [r for r in self.book.first_responses().values() if r.question_ts + r.latency_s < origin + end]
        latest = max(latencies, key=lambda r: r.question_ts) if latencies else None
        return build_aggregate(
            session=self.session, kind=kind, start=start, end=end, origin=origin,
            cells=self._open.pop((kind, last - first, first), {}), wait_time_s=waits[-1] if waits else None,
            response_latency_s=latest.latency_s if latest is not None else None,
        )

    def _prune(self, frontier_epoch: float) -> None:
        for k in [k for k in self._dip_buckets if k < self._next_dip_bucket]:
            del self._dip_buckets[k]
        if frontier_epoch != math.inf:
            # ids arrive roughly in time order: drop from the oldest until one is still needed
            cutoff = frontier_epoch - self.config.lateness_s
            drop: list[str] = []
            for eid, ts in self._seen.items():
                if ts >= cutoff:
                    break
                drop.append(eid)
            for eid in drop:
                del self._seen[eid]

    # ------------------------------------------------------------------ summary
    def summary(self) -> SessionSummary:
        """Whole-session figures from every finalized event (call :meth:`flush` first at session end)."""
        return build_summary(participants=self._participants, waits=self._waits,
                             alerts_raised=self.alerts.raised_total, late_after_s=self.config.late_after_s,
                             questions_by_role=self.questions_by_role,
                             responses=list(self.book.first_responses().values()))

    def attendance(self, *, late_after_s: float | None = None) -> Attendance:
        """Join/leave times of every participant from every finalized event (call :meth:`flush` first at
        session end); ``late_after_s`` overrides the configured late threshold."""
        duration = max((p.last_end or 0.0 for p in self._participants.values()), default=0.0)
        if self.ended_at is not None and self.origin is not None:
            duration = max(duration, self.ended_at - self.origin)
        threshold = self.config.late_after_s if late_after_s is None else late_after_s
        return stays.build_attendance(session=self.session, participants=self._participants,
                                           duration_s=duration, late_after_s=threshold)
