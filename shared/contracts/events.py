"""Event messages: scores, class aggregates, alerts and session lifecycle.

All are JSON on the wire (pydantic), keyed by session on Kafka so that one session's
events stay ordered in one partition. Every event has a stable ``event_id`` so that
consumers are idempotent under at-least-once delivery.

Topics, producers and consumers:

=========================  ======================  ==========================================
topic                      producer                consumers
=========================  ======================  ==========================================
``classpulse.scores``      services.inference      services.aggregator, gateway (live), replay
``classpulse.aggregates``  services.aggregator     services.gateway, Kafka users
``classpulse.alerts``      services.aggregator     services.gateway, Kafka users
``classpulse.lifecycle``   services.ingest         services.aggregator, services.gateway
``classpulse.privacy``     services.gateway        services.aggregator, services.gateway
=========================  ======================  ==========================================
(``classpulse.privacy`` carries ``shared.contracts.privacy.PrivacyEvent``; interactions: ``.interactions``.)
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.timing import TimingTrail

Role = Literal["student", "teacher"]

_STEP = re.compile(r"(?:(?P<epoch>[0-9]+)-)?(?P<seq>[0-9]+)")


class FeatureSnapshot(BaseModel):
    """Raw behaviour features behind one score (None = not measured this step)."""

    model_config = ConfigDict(extra="forbid")

    face_present: bool | None = None
    yaw_deg: float | None = Field(default=None, description="Head yaw relative to the calibrated baseline.")
    pitch_deg: float | None = Field(default=None, description="Head pitch relative to the calibrated baseline.")
    roll_deg: float | None = None
    eye_openness: float | None = Field(default=None, description="Eye aspect ratio, ~0.3 open, <0.15 closed.")
    blinks_per_min: float | None = Field(
        default=None, ge=0.0, description="Blinks per minute over the participant's recent face-present time."
    )
    gaze_offset: float | None = Field(default=None, description="Iris offset from eye centre, 0 centred .. 1 edge.")
    mouth_activity: float | None = Field(default=None, description="Mouth opening variability in the window.")
    mouth_opening: float | None = Field(
        default=None, ge=0.0, description="Lip gap over mouth width in this frame (0 closed, ~0.5 wide open)."
    )
    wrist_above_shoulder: bool | None = None
    motion: float | None = Field(default=None, description="Mean absolute frame difference, 0..1.")
    voice_prob: float | None = Field(default=None, description="Voice activity probability of the audio chunk.")
    rms_dbfs: float | None = Field(default=None, description="Audio level in dBFS.")


class ScoreEvent(BaseModel):
    """Behaviour signals for one participant at one analysis step (topic ``classpulse.scores``).

    Producer: services.inference. Consumers: services.aggregator, services.gateway, replay.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    event_id: str = Field(
        description="Stable id '<session>/<participant>/<seq>' for the first publish (epoch 0), "
        "'<session>/<participant>/<epoch>-<seq>' for a later one; consumers dedupe on it."
    )
    session: str
    participant: str
    role: Role = "student"
    epoch: int = Field(default=0, ge=0, description="Publish epoch of the media behind this step (0 = first publish).")
    seq: int = Field(ge=0, description="Step number within the epoch; (epoch, seq) increases per participant.")
    media_time: float = Field(
        ge=0.0, description="Seconds from the start of this participant's media (their first publish)."
    )
    present: bool
    attentive: bool
    speaking: bool
    hand_raised: bool
    camera_on: bool = True
    mic_on: bool = True
    engagement: float = Field(ge=0.0, le=1.0)
    confidence: float = Field(ge=0.0, le=1.0)
    contributions: dict[str, float] = Field(
        default_factory=dict,
        description="Signed contribution of each input signal to engagement (the teacher-facing explanation).",
    )
    features: FeatureSnapshot = Field(default_factory=FeatureSnapshot)
    timing: TimingTrail
    producer: str | None = Field(
        default=None,
        max_length=256,
        description="The inference worker (consumer name) that scored this step: the holder of the "
        "participant's shard lease at the time.",
    )

    @staticmethod
    def make_id(session: str, participant: str, seq: int, epoch: int = 0) -> str:
        """``<session>/<participant>/<seq>`` (epoch 0: the format before epochs) or ``.../<epoch>-<seq>``."""
        return f"{session}/{participant}/{seq}" if epoch == 0 else f"{session}/{participant}/{epoch}-{seq}"

    @staticmethod
    def parse_id(event_id: str) -> tuple[str, str, int, int]:
        """``(session, participant, epoch, seq)`` of an id in either format; ValueError when it is neither."""
        parts = event_id.rsplit("/", 2)
        match = _STEP.fullmatch(parts[-1])
        if len(parts) != 3 or not parts[0] or not parts[1] or match is None:
            raise ValueError(f"not a score event id: {event_id!r}")
        return parts[0], parts[1], int(match["epoch"] or 0), int(match["seq"])

    def order(self) -> tuple[int, int]:
        """Position in the participant's stream: later publishes after earlier ones."""
        return (self.epoch, self.seq)


class WindowRef(BaseModel):
    """The time window an aggregate covers (media/session time in seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["tumbling", "hopping"] = "tumbling"
    size_s: float = Field(gt=0)
    start: float
    end: float


class ParticipantWindow(BaseModel):
    """One participant's figures within a window."""

    model_config = ConfigDict(extra="forbid")

    role: Role = "student"
    present_ratio: float = Field(ge=0.0, le=1.0)
    attentive_ratio: float = Field(ge=0.0, le=1.0)
    engagement_mean: float = Field(ge=0.0, le=1.0)
    talk_time_s: float = Field(ge=0.0)
    turns: int = Field(ge=0)
    hand_raised: bool = False


class ClassAggregate(BaseModel):
    """Class-level figures for one session window (topic ``classpulse.aggregates``).

    Producer: services.aggregator. Consumers: services.gateway, Kafka users, replay.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    event_id: str = Field(description="Stable id '<session>/<window kind>/<size>/<start>'.")
    session: str
    window: WindowRef
    participants_total: int = Field(ge=0)
    participants_present: int = Field(ge=0)
    attentive_ratio: float = Field(ge=0.0, le=1.0)
    engagement_mean: float = Field(ge=0.0, le=1.0)
    engagement_p10: float = Field(ge=0.0, le=1.0)
    engagement_p90: float = Field(ge=0.0, le=1.0)
    teacher_talk_share: float = Field(ge=0.0, le=1.0)
    talk_equity_gini: float = Field(ge=0.0, le=1.0, description="Gini of student talk time; 0 = equal.")
    hand_equity_gini: float = Field(ge=0.0, le=1.0, description="Gini of student hand raises; 0 = equal.")
    wait_time_s: float | None = Field(default=None, description="Last silence after the teacher until a student spoke.")
    hand_queue: list[str] = Field(default_factory=list, description="Participants with a raised hand, oldest first.")
    questions_students: int = Field(default=0, ge=0, description="Questions students asked in the window.")
    questions_teacher: int = Field(default=0, ge=0, description="Questions the teacher asked in the window.")
    chat_messages: int = Field(
        default=0, ge=0, description="Written messages (chat, questions, answers) in the window."
    )
    participation_equity_gini: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Gini of student participation over voice + chat in the window."
    )
    response_latency_s: float | None = Field(
        default=None, description="Latest teacher question -> first student response delay known by the window end."
    )
    participants: dict[str, ParticipantWindow] = Field(default_factory=dict)
    timing: TimingTrail


AlertKind = Literal["away", "attention_dip", "silence", "camera_off"]


class Alert(BaseModel):
    """An alert raised or cleared (topic ``classpulse.alerts``).

    Producer: services.aggregator. Consumers: services.gateway, Kafka users.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    event_id: str
    session: str
    participant: str | None = Field(default=None, description="None for class-level alerts.")
    kind: AlertKind
    state: Literal["raised", "cleared"]
    since: float = Field(description="Session time the condition started.")
    at: float = Field(description="Session time of this state change.")
    message: str = Field(description="Teacher-facing text without personal data beyond the participant id.")
    timing: TimingTrail


LifecycleKind = Literal["joined", "left", "camera_off", "camera_on", "mic_muted", "mic_unmuted", "session_ended"]


class LifecycleEvent(BaseModel):
    """A participant or session state change (topic ``classpulse.lifecycle``).

    Producer: services.ingest. Consumers: services.aggregator, services.gateway.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    event_id: str
    session: str
    participant: str
    role: Role = "student"
    kind: LifecycleKind
    ts: float = Field(description="Wall-clock time of the change (epoch s).")
    media_time: float | None = None
