"""The faust aggregator loses no input while its consumer group rebalances.

faust skips (and acks) records that were fetched before a rebalance and read after it; a
second worker joining, and a worker crashing and coming back at once, while scores flow,
must still give exactly the figures of the pure core fed the same scores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.aggregator.scripted import lifecycle_event
from services.aggregator.topics_setup import ensure_topics
from shared.analytics.session import SessionAggregator
from shared.contracts.codec import EventCodec
from shared.contracts.events import LifecycleEvent, ScoreEvent
from shared.transport.kafka import KafkaEventBus
from tests.integration.test_aggregator_faust import (
    BASE,
    Outputs,
    Worker,
    differences,
    publish,
    script,
    settings_from,
    worker_env,  # noqa: F401  (fixture)
)

pytestmark = pytest.mark.integration

SESSIONS = 4
CHUNKS = 24


def expected(events: list[ScoreEvent], end: LifecycleEvent, env: dict[str, str],
             joined: LifecycleEvent) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """What the pure core gives for the session (joined, scores, end)."""
    agg = SessionAggregator(session=end.session, config=settings_from(env).aggregation_config())
    agg.add_lifecycle(joined)
    for ev in events:
        agg.add_score(ev)
    agg.add_lifecycle(end)
    aggregates, alerts = agg.flush()
    return ({a.event_id: a.model_dump(exclude={"timing"}) for a in aggregates},
            {a.event_id: a.model_dump(exclude={"timing"}) for a in alerts})


async def publish_lifecycle(bootstrap: str, prefix: str, event: LifecycleEvent) -> None:
    bus = KafkaEventBus(bootstrap=bootstrap)
    await bus.start()
    try:
        await bus.publish(f"{prefix}classpulse.lifecycle", event.session, EventCodec(LifecycleEvent).encode(event))
    finally:
        await bus.close()


def tails(folder: Path) -> str:
    """The end of every worker's log."""
    return "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted(folder.glob("worker-*.log")))


async def test_no_score_is_lost_while_workers_join_and_restart(
    worker_env: dict[str, str], kafka_bootstrap: str, unique: str, tmp_path: Path  # noqa: F811
) -> None:
    prefix = worker_env["CLASSPULSE_AGGREGATOR_TOPIC_PREFIX"]
    per_session: list[tuple[list[ScoreEvent], LifecycleEvent]] = []
    want_aggs: dict[str, dict] = {}  # type: ignore[type-arg]
    want_alerts: dict[str, dict] = {}  # type: ignore[type-arg]
    starts: list[LifecycleEvent] = []
    for i in range(SESSIONS):
        session = f"rebalance-{unique}-{i}"
        end = lifecycle_event(session=session, participant="teacher", kind="session_ended", t=30.0, base=BASE,
                              role="teacher")
        joined = lifecycle_event(session=session, participant="teacher", kind="joined", t=0.0, base=BASE,
                                 role="teacher")
        events = script(session).events()
        per_session.append((events, end))
        starts.append(joined)
        aggs, alerts = expected(events, end, worker_env, joined)
        want_aggs.update(aggs)
        want_alerts.update(alerts)
    # interleave the sessions in time order, as live classes would send them
    flow = sorted((ev for events, _ in per_session for ev in events), key=lambda e: e.timing.capture_ts)
    step = len(flow) // CHUNKS + 1
    chunks = [flow[i:i + step] for i in range(0, len(flow), step)]

    # topics first: the output reader must see their partitions, the workers agree on the count
    assert await ensure_topics(bootstrap=kafka_bootstrap, settings=settings_from(worker_env)) == 2
    out = Outputs(kafka_bootstrap, prefix)
    await out.start()
    workers = [Worker({**worker_env, "CLASSPULSE_AGGREGATOR_DATA_DIR": str(tmp_path / "state-1")},
                      tmp_path / "worker-1.log")]
    try:
        # classes start with lifecycle events: the state then holds an offset of both input topics
        # (records faust skips before a topic-partition's first record is in the state stay lost)
        for joined in starts:
            await publish_lifecycle(kafka_bootstrap, prefix, joined)
        # windows close a few seconds of session time behind the latest score
        await publish(kafka_bootstrap, prefix, [ev for chunk in chunks[:6] for ev in chunk], None)
        await out.until(lambda: len(out.aggregates) > 0, 40)
        assert out.aggregates, "the first worker emitted nothing"
        # a backlog in flight, and a second worker joins the group
        await publish(kafka_bootstrap, prefix, [ev for chunk in chunks[6:12] for ev in chunk], None)
        workers.append(Worker({**worker_env, "CLASSPULSE_AGGREGATOR_DATA_DIR": str(tmp_path / "state-2")},
                              tmp_path / "worker-2.log"))
        for n, chunk in enumerate(chunks[12:], start=12):
            await publish(kafka_bootstrap, prefix, chunk, None)
            if n == 16:  # the first one crashes and comes back at once (its old membership still alive)
                workers[0].kill()
                workers[0] = Worker({**worker_env, "CLASSPULSE_AGGREGATOR_DATA_DIR": str(tmp_path / "state-3")},
                                    tmp_path / "worker-3.log")
            await out.until(lambda: False, 0.5)
        for _, end in per_session:
            await publish(kafka_bootstrap, prefix, [], end)
        await out.until(lambda: len(out.aggregates) >= len(want_aggs) and len(out.alerts) >= len(want_alerts), 45)
    finally:
        await out.close()
        for worker in workers:
            worker.stop()
    logs = tails(tmp_path)
    assert out.aggregates == want_aggs, f"{differences(out.aggregates, want_aggs)}\n{logs}"
    assert out.alerts == want_alerts, f"{differences(out.alerts, want_alerts)}\n{logs}"
    assert not out.repeats, "a window was emitted twice with different figures"
