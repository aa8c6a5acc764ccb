"""``classpulse replay --from-kafka``: a past live session's report rebuilt from real Kafka score events.

Scripted score events of two participants (the student joins 3 s after the teacher) are
published to a fresh 3-partition topic next to another session's events and a redelivered
duplicate; the rebuilt report must match the script second by second and equal the report
built in-process from the same events.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from services.cli import main
from services.replay.from_events import report_from_events
from shared.contracts.events import ScoreEvent
from shared.contracts.timing import TimingTrail
from shared.contracts.topics import EventTopic
from shared.transport.kafka import KafkaEventBus
from shared.transport.typed import EventPublisher

pytestmark = pytest.mark.integration

BASE = 1_750_000_000.0
SECONDS = 20


def _student(t: float) -> dict[str, bool]:
    return {"present": not 8 <= t < 11, "attentive": t < 8 or t >= 13, "speaking": 4 <= t < 7,
            "hand_raised": 3 <= t < 5}


def _teacher(t: float) -> dict[str, bool]:
    return {"present": True, "attentive": True, "speaking": t < 4 or 12 <= t < 15, "hand_raised": False}


def _script(session: str) -> list[ScoreEvent]:
    """5 events/s; the student's media starts 3 s into the session (own media_time from 0)."""
    events = []
    for pid, role, offset, fn in (("teacher", "teacher", 0.0, _teacher), ("stud-1", "student", 3.0, _student)):
        for i in range(int((SECONDS - offset) * 5)):
            t = offset + i / 5  # session time
            flags = fn(t)
            events.append(ScoreEvent(
                event_id=ScoreEvent.make_id(session, pid, i), session=session, participant=pid, role=role, seq=i,
                media_time=i / 5, engagement=0.8 if flags["attentive"] else 0.3, confidence=0.9,
                timing=TimingTrail(capture_ts=BASE + t), **flags,  # type: ignore[arg-type]
            ))
    return events


async def _publish(bootstrap: str, topic: str, events: list[ScoreEvent]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    bus = KafkaEventBus(bootstrap=bootstrap)
    await bus.start()
    try:
        pub = EventPublisher(bus=bus, topic=EventTopic(topic, ScoreEvent))
        for e in events:
            await pub.publish(e)
    finally:
        await bus.close()


def test_rebuild_from_kafka_matches_script_and_in_process_report(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    session, topic = f"live-{unique}", f"test.replay.scores.{unique}"
    mine = _script(session)
    other = _script(f"other-{unique}")
    asyncio.run(_publish(kafka_bootstrap, topic, [*mine, *other, mine[7]]))  # + one redelivered duplicate

    out = tmp_path / "report"
    argv = ["replay", "--from-kafka", "--session", session, "--bootstrap", kafka_bootstrap, "--topic", topic,
            "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "report.json").read_text())

    assert doc["session"]["id"] == session and doc["session"]["duration_s"] == pytest.approx(SECONDS, abs=0.21)
    assert {p["id"]: p["role"] for p in doc["participants"]} == {"teacher": "teacher", "stud-1": "student"}
    rows = {(r["participant"], r["t"]): r for r in doc["timeline"]}
    assert len(rows) == len(doc["timeline"]) == 2 * SECONDS
    for t in range(SECONDS):
        for pid, fn, offset in (("teacher", _teacher, 0.0), ("stud-1", _student, 3.0)):
            row = rows[(pid, float(t))]
            if t < offset:  # before joining: nothing observed
                assert not row["present"] and row["confidence"] == 0.0
                continue
            want = fn(t + 0.5)
            assert {k: row[k] for k in want} == want, (pid, t, row)

    summary = doc["summary"]
    assert summary["participants"]["stud-1"]["talk_time_s"] == pytest.approx(3.0, abs=0.05)
    assert summary["participants"]["stud-1"]["hand_raises"] == 1
    assert summary["participants"]["teacher"]["talk_time_s"] == pytest.approx(7.0, abs=0.05)
    assert summary["teacher_talk_share"] == pytest.approx(0.7, abs=0.01)

    expected = report_from_events(mine, session=session, source=doc["session"]["source"])
    assert doc == json.loads(expected.model_dump_json())


def test_unknown_session_and_unreachable_kafka(kafka_bootstrap: str, unique: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    topic = f"test.replay.scores.{unique}"
    asyncio.run(_publish(kafka_bootstrap, topic, _script(f"someone-{unique}")[:5]))
    argv = ["replay", "--from-kafka", "--session", "never-held", "--bootstrap", kafka_bootstrap, "--topic", topic,
            "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no score events for session 'never-held'") and "\n" not in err

    argv = ["replay", "--from-kafka", "--session", "x", "--bootstrap", "127.0.0.1:1", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach Kafka at 127.0.0.1:1") and "\n" not in err
