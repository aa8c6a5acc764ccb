"""``classpulse export``: a past live session's tables from a real Kafka log (scores, lifecycle, alerts).

A teacher and two students, one of whom leaves and comes back (ingest's 'left' then 'joined'), are
published to the real topics next to another session; each format's files must hold the same rows,
the timeline one row per participant-second, the students table the reconnect, the events table the
joins, the leave and the alert.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from services.cli import main
from shared.contracts.events import Alert, LifecycleEvent, ScoreEvent
from shared.contracts.timing import TimingTrail
from shared.contracts.topics import ALERTS, LIFECYCLE, SCORES, EventTopic
from shared.transport.kafka import KafkaEventBus
from shared.transport.typed import EventPublisher

pytestmark = pytest.mark.integration

BASE = 1_760_000_000.0


def _scores(session: str, pid: str, start: float, end: float, seq0: int = 0) -> list[ScoreEvent]:
    return [ScoreEvent(event_id=ScoreEvent.make_id(session, pid, seq0 + i), session=session, participant=pid,
                       seq=seq0 + i, media_time=i / 5, present=True, attentive=True, speaking=False,
                       hand_raised=False, engagement=0.7, confidence=0.9,
                       timing=TimingTrail(capture_ts=BASE + start + i / 5),
                       role="teacher" if pid == "t" else "student")
            for i in range(int((end - start) * 5))]


def _life(session: str, pid: str, kind: str, t: float) -> LifecycleEvent:
    return LifecycleEvent(event_id=f"{session}/{pid}/{kind}/{t}", session=session, participant=pid,
                          kind=kind, ts=BASE + t)  # type: ignore[arg-type]


async def _publish(bootstrap: str, session: str) -> None:
    bus = KafkaEventBus(bootstrap=bootstrap)
    await bus.start()
    try:
        scores = EventPublisher(bus=bus, topic=SCORES)
        for e in [*_scores(session, "t", 0, 30), *_scores(session, "a", 0, 30), *_scores(session, "r", 0, 10),
                  *_scores(session, "r", 20, 30, seq0=1000), *_scores(f"{session}-other", "x", 0, 5)]:
            await scores.publish(e)
        life: EventPublisher[LifecycleEvent] = EventPublisher(bus=bus, topic=LIFECYCLE)
        for e in (_life(session, "t", "joined", 0), _life(session, "a", "joined", 0),
                  _life(session, "r", "joined", 0), _life(session, "r", "left", 12), _life(session, "r", "joined", 19)):
            await life.publish(e)
        alerts: EventPublisher[Alert] = EventPublisher(bus=bus, topic=EventTopic(ALERTS.name, Alert))
        await alerts.publish(Alert(event_id=f"{session}/away/a/raised", session=session, participant="a",
                                   kind="away", state="raised", since=5.0, at=15.0, message="a away for 10 s",
                                   timing=TimingTrail(capture_ts=BASE + 15)))
    finally:
        await bus.close()


async def test_export_reads_the_log_and_writes_every_format(kafka_bootstrap: str, unique: str,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = f"exp-{unique}"
    await _publish(kafka_bootstrap, session)
    import asyncio

    rows: dict[str, dict[str, list[dict[str, object]]]] = {}
    for fmt in ("csv", "jsonl", "parquet"):
        out = tmp_path / fmt
        code = await asyncio.to_thread(main, ["export", "--session", session, "--format", fmt, "--out", str(out),
                                              "--bootstrap", kafka_bootstrap])
        assert code == 0, capsys.readouterr().err
        rows[fmt] = {}
        for table in ("timeline", "students", "events"):
            data = (out / f"{session}-{table}.{fmt}").read_bytes()
            if fmt == "csv":
                rows[fmt][table] = list(csv.DictReader(io.StringIO(data.decode())))
            elif fmt == "jsonl":
                rows[fmt][table] = [json.loads(line) for line in data.decode().splitlines()]
            else:
                rows[fmt][table] = pq.read_table(io.BytesIO(data)).to_pylist()
    for table in ("timeline", "students", "events"):
        assert rows["jsonl"][table] == rows["parquet"][table], table
        assert len(rows["csv"][table]) == len(rows["parquet"][table]), table
    timeline = rows["parquet"]["timeline"]
    assert {r["participant"] for r in timeline} == {"t", "a", "r"}  # not the other session's
    assert len([r for r in timeline if r["participant"] == "a"]) == 30
    students = {r["participant"]: r for r in rows["parquet"]["students"]}
    assert students["r"]["reconnects"] == 1 and students["r"]["stays"].startswith("0-12;19-")
    assert students["a"]["attended_ratio"] == pytest.approx(1.0, abs=0.02)
    events = [(r["kind"], r["participant"]) for r in rows["parquet"]["events"]]
    assert ("left", "r") in events and events.count(("joined", "r")) == 2 and ("alert_raised", "a") in events

    single = tmp_path / "one.csv"
    assert await asyncio.to_thread(main, ["export", "--session", session, "--table", "students", "--out",
                                          str(single), "--bootstrap", kafka_bootstrap]) == 0
    assert single.read_text().startswith("participant,role,")
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["export", "--session", f"{session}-none", "--bootstrap",
                                          kafka_bootstrap, "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no score events for session") and "\n" not in err
