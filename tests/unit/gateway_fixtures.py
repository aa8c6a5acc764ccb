"""Shared builders for the gateway unit tests (memory transports, real app, test client)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from services.gateway.app import create_gateway_app
from services.gateway.lti.settings import LtiSettings
from services.gateway.settings import GatewaySettings
from shared.contracts.events import Alert, ClassAggregate, ParticipantWindow, ScoreEvent, WindowRef
from shared.contracts.timing import TimingTrail, wall_clock
from shared.contracts.topics import AGGREGATES, ALERTS, SCORES
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.text.stage import TextStage
from shared.tokens import TokenRole, issue_token
from shared.transport.base import LiveBus
from shared.transport.factory import Transports, build_transports
from shared.transport.live import LivePublisher
from shared.transport.typed import EventPublisher

SECRET = "unit-test-secret"
START = wall_clock() - 30.0


def token(session: str, role: TokenRole, participant: str = "*", secret: str = SECRET) -> str:
    pid = participant if participant != "*" or role == "viewer" else "t1"
    return issue_token(secret=secret, session=session, participant=pid, role=role)


def auth(session: str, role: TokenRole) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(session, role)}"}


def score(
    session: str,
    participant: str,
    seq: int,
    *,
    present: bool = True,
    hand: bool = False,
    speaking: bool = False,
    engagement: float = 0.6,
    role: str = "student",
) -> ScoreEvent:
    capture = START + seq * 0.2  # event time follows media time, as from a real capture
    trail = TimingTrail(capture_ts=capture).stamped("ingest", received=capture + 0.01, emitted=capture + 0.015)
    trail = trail.stamped("inference", received=capture + 0.02, emitted=capture + 0.04)
    return ScoreEvent(
        event_id=ScoreEvent.make_id(session, participant, seq),
        session=session,
        participant=participant,
        role=role,  # type: ignore[arg-type]
        seq=seq,
        media_time=seq * 0.2,
        present=present,
        attentive=present,
        speaking=speaking,
        hand_raised=hand,
        engagement=engagement,
        confidence=0.9,
        contributions={"face_present": 0.3, "gaze": -0.1},
        timing=trail,
    )


def aggregate(session: str, start: float, *, hand_queue: list[str] | None = None) -> ClassAggregate:
    return ClassAggregate(
        event_id=f"{session}/tumbling/1/{start}",
        session=session,
        window=WindowRef(size_s=1, start=start, end=start + 1),
        participants_total=2,
        participants_present=2,
        attentive_ratio=0.5,
        engagement_mean=0.55,
        engagement_p10=0.2,
        engagement_p90=0.9,
        teacher_talk_share=0.25,
        talk_equity_gini=0.1,
        hand_equity_gini=0.0,
        hand_queue=hand_queue or [],
        participants={
            "alice": ParticipantWindow(
                present_ratio=1, attentive_ratio=1, engagement_mean=0.7, talk_time_s=0.6, turns=1
            ),
            "t1": ParticipantWindow(
                role="teacher", present_ratio=1, attentive_ratio=1, engagement_mean=0.5, talk_time_s=0.2, turns=1
            ),
        },
        timing=TimingTrail(capture_ts=wall_clock() - 0.1).stamped("aggregator", received=wall_clock() - 0.01),
    )


def alert(session: str, participant: str, state: str = "raised") -> Alert:
    return Alert(
        event_id=f"{session}/away/{participant}/{state}",
        session=session,
        participant=participant,
        kind="away",
        state=state,  # type: ignore[arg-type]
        since=1.0,
        at=11.0,
        message=f"{participant} away for 10 s",
        timing=TimingTrail(capture_ts=wall_clock()),
    )


@dataclass
class Harness:
    client: TestClient
    transports: Transports
    metrics: Metrics
    live: LivePublisher

    async def emit(self, event: ScoreEvent | ClassAggregate | Alert) -> None:
        """Publish like the pipeline does: event log + live bus."""
        topic = {ScoreEvent: SCORES, ClassAggregate: AGGREGATES, Alert: ALERTS}[type(event)]
        await EventPublisher(bus=self.transports.events, topic=topic).publish(event)  # type: ignore[arg-type]
        await self.live.publish(event)


@asynccontextmanager
async def gateway(
    *,
    live: LiveBus | None = None,
    keep_text: bool = False,
    text_stage: TextStage | None = None,
    lti: LtiSettings | None = None,
    **settings: object,
) -> AsyncIterator[Harness]:
    common = CommonSettings(token_secret=SECRET, keep_text=keep_text)  # type: ignore[arg-type]
    metrics = Metrics(CollectorRegistry())
    transports = build_transports(common, metrics=metrics)
    if live is not None:
        transports.live = live
    app = create_gateway_app(
        settings=GatewaySettings(heartbeat_s=1.0, **settings),  # type: ignore[arg-type]
        common=common,
        transports=transports,
        metrics=metrics,
        text_stage=text_stage,
        lti=lti,
    )
    async with TestClient(TestServer(app)) as client:
        yield Harness(client=client, transports=transports, metrics=metrics, live=LivePublisher(bus=transports.live))
