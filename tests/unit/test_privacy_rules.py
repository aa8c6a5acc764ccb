"""Session privacy rules (shared/analytics/privacy.py), the aggregation core and driver under them,
the policy view and the media filter, on memory transports."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.aggregator.driver import DictStore, Output, SessionDriver
from services.aggregator.scripted import Behaviour, Script, between, lifecycle_event
from shared.analytics.config import AggregationConfig
from shared.analytics.privacy import apply_event, apply_privacy, redact_live, redact_report
from shared.analytics.session import SessionAggregator
from shared.analytics.snapshot import dump, load
from shared.contracts.codec import EventCodec, encode_media, media_subject
from shared.contracts.events import Alert, ClassAggregate, LifecycleEvent, ScoreEvent
from shared.contracts.live import LiveLifecycle, LivePrivacy, LiveScore, decode_live, encode_live
from shared.contracts.privacy import PrivacyEvent, SessionPrivacy
from shared.contracts.report import Report, ReportParticipant, ReportSession, SessionSummary
from shared.contracts.topics import INFERENCE_GROUP, state_key, summary_key
from shared.metrics import Metrics
from shared.privacy.media import PrivateMediaBus
from shared.privacy.store import MemoryPrivacyStore
from shared.privacy.view import PrivacyView
from shared.settings import CommonSettings
from shared.testkit.messages import frames
from shared.transport.factory import build_transports
from shared.transport.memory import MemoryLiveBus, MemoryMediaBus

pytestmark = pytest.mark.unit

BASE = 1_700_000_000.0
CFG = AggregationConfig(tumbling_sizes_s=(1.0,), hopping_size_s=10.0, hopping_step_s=5.0, away_after_s=3.0)


def change(kind: str, participant: str | None = None, *, t: float = 0.0, session: str = "s1",
           aggregate_only: bool | None = None) -> PrivacyEvent:
    ts = BASE + t
    return PrivacyEvent(event_id=PrivacyEvent.make_id(session, kind, participant, ts), session=session,  # type: ignore[arg-type]
                        kind=kind, participant=participant, aggregate_only=aggregate_only, by="teacher", ts=ts)  # type: ignore[arg-type]


def script(session: str = "s1") -> tuple[list[ScoreEvent], LifecycleEvent]:
    s = Script(session=session, base=BASE)
    s.add("alice", between(0, 20, Behaviour(hand_raised=True)), end=20)
    s.add("bob", between(0, 20, Behaviour(speaking=True, hand_raised=True)), end=20)
    return s.events(), lifecycle_event(session=session, participant="alice", kind="session_ended", t=20.0, base=BASE)


def test_policy_changes_and_erasure_keep_consent() -> None:
    p = SessionPrivacy(session="s1")
    p = apply_event(p, change("opted_out", "bob"))
    p = apply_event(p, change("aggregate_only", aggregate_only=True))
    assert p.opted_out == ["bob"] and p.aggregate_only and p.hides("alice") and not p.hides(None)
    erased = apply_event(p, change("erased", t=5.0))
    assert erased.erased_at == BASE + 5.0 and erased.opted_out == ["bob"] and erased.aggregate_only
    assert apply_event(p, change("opted_in", "bob")).opted_out == []


def test_opted_out_participant_leaves_every_output_and_counts_as_left() -> None:
    events, end = script()
    agg = SessionAggregator(session="s1", config=CFG)
    half = [e for e in events if e.media_time < 10]
    for e in half:
        agg.add_score(e)
    agg.advance(BASE + 9)
    apply_privacy(agg, change("opted_out", "bob", t=10.0))
    for e in events:
        if e.media_time >= 10:
            agg.add_score(e)  # bob's later scores (media in flight) are not admitted
    agg.add_lifecycle(end)
    aggregates, _ = agg.flush()
    late = [a for a in aggregates if a.window.start >= 11]
    assert late and all("bob" not in a.participants and "bob" not in a.hand_queue for a in late)
    assert all(a.participants_present == 1 for a in late)  # bob left at the opt-out: class figures are alice's
    restored = load(dump(agg), config=CFG)
    assert restored.privacy.opted_out == ["bob"]


async def _drive(policy_events: list[PrivacyEvent], *, default_aggregate_only: bool = False
                 ) -> tuple[SessionDriver, list[Output], MemoryLiveBus, DictStore]:
    events, end = script()
    sent: list[Output] = []

    class Emitter:
        async def emit(self, session: str, out: Sequence[Output]) -> None:
            sent.extend(out)

    live, store = MemoryLiveBus(), DictStore()
    d = SessionDriver(config=CFG, clock="event", store=store, emitter=Emitter(), metrics=Metrics(CollectorRegistry()),
                      live=live, end_grace_s=0.5, aggregate_only=default_aggregate_only)
    pcodec, scodec, lcodec = EventCodec(PrivacyEvent), EventCodec(ScoreEvent), EventCodec(LifecycleEvent)
    for p in policy_events:
        d.add("privacy", pcodec.encode(p))
    for i in range(0, len(events), 20):
        touched = {d.add("score", scodec.encode(e)) for e in events[i:i + 20]}
        await d.close({t for t in touched if t}, received=0.0)
    d.add("lifecycle", lcodec.encode(end))
    await d.close({"s1"}, received=0.0)
    await asyncio.sleep(0.6)  # the end grace: no record for that long means the input is drained
    await d.close({"s1"}, received=0.0)
    return d, sent, live, store


async def test_aggregate_only_session_emits_class_figures_only() -> None:
    _, sent, live, _ = await _drive([change("aggregate_only", aggregate_only=True)])
    aggregates = [o for o in sent if isinstance(o, ClassAggregate)]
    assert aggregates and all(not a.participants and not a.hand_queue for a in aggregates)
    assert any(a.participants_total == 2 for a in aggregates)  # class figures stay
    assert all(a.participant is None for a in sent if isinstance(a, Alert))
    summary = SessionSummary.model_validate_json((await live.get_state(summary_key("s1")))["summary"])
    assert summary.participants == {} and summary.duration_s > 0
    fields = (await live.get_state(state_key("s1"))).keys()
    assert not [f for f in fields if f.startswith(("alert:alice", "alert:bob"))]


async def test_deployment_wide_aggregate_only_applies_without_a_policy() -> None:
    _, sent, _, _ = await _drive([], default_aggregate_only=True)
    assert all(not a.participants for a in sent if isinstance(a, ClassAggregate))


async def test_erased_session_forgets_state_and_snapshot() -> None:
    d, _, _, store = await _drive([])
    d.session("s1")
    store.save("s1", b"{}")
    d.add("privacy", EventCodec(PrivacyEvent).encode(change("erased", t=30.0)))
    assert "s1" not in d.sessions
    await d.close({"s1"}, received=0.0)
    assert store.load("s1") is None and "s1" not in d.sessions


def test_live_messages_and_report_under_each_policy() -> None:
    events, _ = script()
    score = LiveScore(event=events[0])
    left = LiveLifecycle(event=lifecycle_event(session="s1", participant="bob", kind="joined", t=0.0, base=BASE))
    bob_out = LivePrivacy(event=change("opted_out", "bob"))
    out = SessionPrivacy(session="s1", opted_out=[events[0].participant])
    agg_only = SessionPrivacy(session="s1", aggregate_only=True)
    assert redact_live(score, out) is None and redact_live(score, agg_only) is None
    assert redact_live(score, SessionPrivacy(session="s1")) is score
    assert redact_live(left, out) is left and redact_live(left, agg_only) is None
    assert redact_live(bob_out, out) is bob_out and redact_live(bob_out, agg_only) is None
    assert decode_live(encode_live(bob_out)) == bob_out
    report = Report(session=ReportSession(id="s1", source="live", duration_s=1.0),
                    participants=[ReportParticipant(id="alice", role="student"), ReportParticipant(id="bob")],
                    timeline=[], summary=SessionSummary())
    shown = redact_report(report, SessionPrivacy(session="s1", opted_out=["bob"]))
    assert [p.id for p in shown.participants] == ["alice"]
    assert shown.privacy is not None and shown.privacy.opted_out == ["bob"]
    assert "privacy" not in report.model_dump(mode="json")  # absent when nothing applied
    assert redact_report(report, agg_only).participants == []


def _frame(participant: str, seq: int = 0) -> bytes:
    image = np.zeros((16, 16, 3), np.uint8)
    return encode_media(frames([image], session="s1", participant=participant, start_seq=seq)[0])


async def test_private_media_bus_drops_opted_out_media_on_append_and_on_read() -> None:
    metrics = Metrics(CollectorRegistry())
    inner = MemoryMediaBus(maxlen=100, shards=2)
    store = MemoryPrivacyStore(media=inner)
    view = PrivacyView(store)
    bus = PrivateMediaBus(inner, view=view, metrics=metrics)
    await bus.ensure_group(INFERENCE_GROUP)
    assert media_subject(_frame("bob")) == ("s1", "bob")
    await bus.append(_frame("bob", 0), key="s1/bob")  # before the opt-out: in the stream (media in flight)
    await bus.append(_frame("alice", 0), key="s1/alice")
    await store.update("s1", lambda p: (p or SessionPrivacy(session="s1")).with_opt_out("bob", True, now=1.0))
    dropped = await bus.append(_frame("bob", 1), key="s1/bob")
    assert dropped.id == "" and await inner.length() == 2
    read = await bus.read_group(INFERENCE_GROUP, "w", shards=[0, 1], count=10, block_ms=0)
    assert [media_subject(e.data)[1] for e in read] == ["alice"]
    assert await inner.length() == 1  # bob's entry was acked unanalysed, alice's waits for its ack
    assert bus.dropped == 2
    assert metrics.media_dropped_total.labels("opted_out")._value.get() == 2


async def test_view_refreshes_and_keeps_the_last_policy_when_the_store_fails() -> None:
    now = [0.0]

    class Flaky(MemoryPrivacyStore):
        fail = False

        async def get(self, session: str) -> SessionPrivacy | None:
            if self.fail:
                raise ConnectionError("down")
            return await super().get(session)

    store = Flaky()
    view = PrivacyView(store, refresh_s=1.0, clock=lambda: now[0])
    assert not await view.opted_out("s1", "bob")
    await store.put(SessionPrivacy(session="s1", opted_out=["bob"]))
    assert not await view.opted_out("s1", "bob")  # cached for refresh_s
    now[0] = 1.5
    assert await view.opted_out("s1", "bob")
    store.fail = True
    now[0] = 3.0
    assert await view.opted_out("s1", "bob")  # the last known policy stays in force


async def test_memory_erasure_clears_what_the_transports_hold() -> None:
    t = build_transports(CommonSettings(), metrics=Metrics(CollectorRegistry()))
    await t.start()
    live = t.live
    assert isinstance(live, MemoryLiveBus)
    await live.set_state(state_key("s1"), "score:bob", b"x")
    await live.set_state(state_key("s1"), "alert:bob:away", b"x")
    await live.set_state(state_key("s1"), "score:bobby", b"x")
    await live.set_state(summary_key("s1"), "summary", b"{}")
    await t.publishes.begin("s1", "bob")
    items = await t.privacy.forget_participant("s1", "bob")
    assert sorted((await live.get_state(state_key("s1"))).keys()) == ["score:bobby"]
    assert sum(i.count or 0 for i in items) == 2
    items = await t.privacy.erase("s1")
    assert await live.get_state(state_key("s1")) == {} and await live.get_state(summary_key("s1")) == {}
    assert (await t.publishes.begin("s1", "bob")).epoch == 0  # the epoch counter was erased too
    assert {i.what for i in items} >= {"publish epochs", "live state and session summary"}
    await t.close()


async def test_up_relay_into_the_private_bus_drops_what_ingest_processes_send_for_opted_out(tmp_path: Path) -> None:
    from shared.transport.memory import MemoryEventBus
    from shared.transport.publishes import MemoryPublishRegistry
    from shared.transport.relay import RelayServer, relay_buses

    inner = MemoryMediaBus(maxlen=100, shards=2)
    store = MemoryPrivacyStore(media=inner)
    bus = PrivateMediaBus(inner, view=PrivacyView(store))
    await store.put(SessionPrivacy(session="s1", opted_out=["bob"]))
    server = RelayServer(path=tmp_path / "relay.sock", media=bus, events=MemoryEventBus(),
                         publishes=MemoryPublishRegistry())
    await server.start()
    media, _, _ = relay_buses(server.path, shards=2)
    await media.start()
    try:
        for seq in range(5):
            await media.append(_frame("bob", seq), key="s1/bob")  # an ingest process of `up` relays them
            await media.append(_frame("alice", seq), key="s1/alice")
        for _ in range(300):
            if server.records == 10:
                break
            await asyncio.sleep(0.01)
        assert server.records == 10 and bus.dropped == 5 and await inner.length() == 5
    finally:
        await media.close()
        await server.close()


def test_every_privacy_module_imports_on_its_own() -> None:
    import subprocess
    import sys

    modules = ["shared.privacy.store", "shared.privacy.view", "shared.privacy.media", "shared.privacy.redis_store",
               "shared.analytics.privacy", "services.gateway.privacy_routes", "services.aggregator.topic_retention"]
    for module in modules:  # a fresh interpreter each: an import circle shows only when a module comes first
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (module, done.stderr[-500:])


def test_a_report_rebuilt_from_the_event_log_keeps_opt_outs_mode_and_erasure() -> None:
    from services.replay.from_events import EventLogError, private_report
    from shared.contracts.timing import TimingTrail

    def ev(pid: str, i: int) -> ScoreEvent:
        return ScoreEvent(event_id=ScoreEvent.make_id("m", pid, i), session="m", participant=pid, seq=i,
                          media_time=i / 5, present=True, attentive=True, speaking=False, hand_raised=False,
                          engagement=0.5, confidence=0.9, timing=TimingTrail(capture_ts=5000.0 + i / 5))

    events = [ev(p, i) for p in ("ana", "ben") for i in range(50)]

    def at(kind: str, t: float, participant: str | None = None, mode: bool | None = None) -> PrivacyEvent:
        return PrivacyEvent(event_id=f"m/{kind}/{t}", session="m", kind=kind, participant=participant,  # type: ignore[arg-type]
                            aggregate_only=mode, by="teacher", ts=5000.0 + t)

    report = private_report(events, [at("opted_out", 3.0, "ben")], session="m", source="kafka")
    assert [p.id for p in report.participants] == ["ana"] and {r.participant for r in report.timeline} == {"ana"}
    assert report.privacy is not None and report.privacy.opted_out == ["ben"]
    only = private_report(events, [at("aggregate_only", 1.0, mode=True)], session="m", source="kafka")
    assert only.participants == [] and only.timeline == [] and only.summary.participants == {}
    later = private_report(events, [at("erased", 6.0)], session="m", source="kafka")
    assert later.session.duration_s < 5.0  # only what came after the erasure (capture 6 s .. 10 s)
    with pytest.raises(EventLogError, match="was erased"):
        private_report(events, [at("erased", 20.0)], session="m", source="kafka")
