"""Response models of the gateway's REST API (the OpenAPI document is generated from them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, RootModel

from shared.contracts.events import Alert, ClassAggregate, LifecycleEvent, Role, ScoreEvent
from shared.contracts.interactions import InteractionCounts, InteractionEvent
from shared.contracts.report import QuestionItem, TimelineRow
from shared.contracts.timing import TimingTrail
from shared.signals import OUTPUT_NAMES


class LiveParticipant(TimelineRow):
    """A participant's latest signals: a timeline row's keys plus ``ts`` and the explanation."""

    model_config = ConfigDict(extra="forbid")

    t: float = Field(description="Start of the media second of the latest score.")
    ts: float = Field(description="Wall-clock capture time of the media behind the latest score (epoch s).")
    role: Role
    camera_on: bool
    mic_on: bool
    epoch: int = Field(default=0, description="Publish epoch of the latest score (grows with every reconnect).")
    seq: int
    media_time: float
    contributions: dict[str, float] = Field(description="Signed contribution of each signal to engagement.")
    timing: TimingTrail
    questions: int = Field(default=0, ge=0, description="Questions asked so far (chat, Q&A or speech).")
    chat_messages: int = Field(default=0, ge=0, description="Written messages so far (chat, questions, answers).")
    words_spoken: int = Field(default=0, ge=0, description="Words of transcribed speech so far.")
    on_topic_ratio: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Share of judged messages on topic so far (None: none judged)."
    )

    @classmethod
    def from_score(cls, e: ScoreEvent, counts: InteractionCounts | None = None) -> LiveParticipant:
        c = counts or InteractionCounts()
        return cls(
            t=float(int(e.media_time)),
            participant=e.participant,
            **{name: getattr(e, name) for name in OUTPUT_NAMES},
            ts=e.timing.capture_ts,
            role=e.role,
            camera_on=e.camera_on,
            mic_on=e.mic_on,
            epoch=e.epoch,
            seq=e.seq,
            media_time=e.media_time,
            contributions=e.contributions,
            timing=e.timing,
            questions=c.questions,
            chat_messages=c.chat_messages,
            words_spoken=c.words_spoken,
            on_topic_ratio=c.on_topic_ratio,
        )


class LiveState(BaseModel):
    """``GET /api/sessions/{session}/live``: latest signals of every participant and the class."""

    model_config = ConfigDict(extra="forbid")

    session: str
    ts: float = Field(description="Server time of this snapshot (epoch s).")
    participants: list[LiveParticipant]
    aggregate: ClassAggregate | None = Field(description="The latest aggregate of the finest tumbling window, if any.")
    windows: list[ClassAggregate] = Field(description="The latest aggregate of every window kind and size.")
    alerts: list[Alert] = Field(description="Alerts currently raised.")
    lifecycle: list[LifecycleEvent] = Field(
        default_factory=list, description="Latest lifecycle change per participant (joined, left, camera off ...)."
    )
    questions: list[QuestionItem] = Field(
        default_factory=list,
        description="Questions asked so far, oldest first (the dashboard's question queue; text only with "
        "CLASSPULSE_KEEP_TEXT=true).",
    )
    aggregate_only: bool = Field(
        default=False, description="The session is aggregate-only: class figures only, no participant rows."
    )
    opted_out: list[str] = Field(
        default_factory=list, description="Participants who opted out: shown only as 'opted out', with no signals."
    )


class ParticipantInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    role: Role
    status: str = Field(description="'active', 'left' or 'opted_out' (presence only: no signals, no media time).")
    first_seen: float
    last_seen: float
    media_time: float = Field(description="Seconds of this participant's media analysed so far.")


class SessionInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    started: float = Field(description="When the gateway first saw the session (epoch s).")
    last_event: float
    ended: bool
    participants: list[ParticipantInfo]
    scores: int = Field(description="Score events received.")
    duration_s: float
    aggregate_only: bool = Field(default=False, description="Class figures only: participants are not listed.")


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="What is wrong and what to do.")
    items: list[str] = Field(
        default_factory=list, description="A rejected batch: one line per bad item ('item <index>: what is wrong')."
    )


class InteractionBatch(RootModel[list[InteractionEvent]]):
    """``POST /api/sessions/{session}/interactions``: a JSON array of interaction events.

    ``session`` may be left out (the path's is used); ``is_question``/``words`` are derived from
    ``text`` by the gateway (a producer without text may send them itself).
    """


class InteractionReceipt(BaseModel):
    """A batch of interaction events accepted (all of it) and published."""

    model_config = ConfigDict(extra="forbid")

    session: str
    accepted: int = Field(ge=0)
    event_ids: list[str]
    opted_out: int = Field(
        default=0, ge=0, exclude_if=lambda v: v == 0,
        description="Events of participants who opted out: dropped, neither analysed nor published (absent: 0).",
    )


class TimelinePage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session: str
    rows: list[TimelineRow]


class AggregatePage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session: str
    aggregates: list[ClassAggregate]


class AlertPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session: str
    alerts: list[Alert]


class ParticipantPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session: str
    participants: list[ParticipantInfo]


class SessionList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sessions: list[SessionInfo]

