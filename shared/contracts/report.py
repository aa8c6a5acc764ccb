"""Session summary and the replay report (public contract, see docs/replay.md).

Producer: the aggregation core (summary) and ``classpulse replay`` (report).
Consumers: users (report.json / report.html / timeline.csv), the gateway's report API.
Keys may be added; the documented ones never change meaning.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.attendance import Attendance
from shared.contracts.events import Role


class ParticipantSummary(BaseModel):
    """One participant over the whole session."""

    model_config = ConfigDict(extra="forbid")

    role: Role = "student"
    present_ratio: float = Field(ge=0.0, le=1.0, description="Share of seconds with a face in frame.")
    attentive_ratio: float = Field(ge=0.0, le=1.0, description="Share of seconds attentive to the screen.")
    talk_time_s: float = Field(ge=0.0, description="Seconds of own voice activity.")
    hand_raises: int = Field(ge=0, description="Distinct hand raises (rising edges).")
    turns: int = Field(default=0, ge=0, description="Distinct speaking turns.")
    engagement_mean: float = Field(default=0.0, ge=0.0, le=1.0)
    away_time_s: float = Field(default=0.0, ge=0.0, description="Seconds not present after joining.")
    joined_at: float | None = Field(default=None, description="Session time of the first media.")
    late: bool = Field(default=False, description="Joined after the session's grace period.")
    questions: int = Field(default=0, ge=0, description="Questions asked (chat, Q&A or speech).")
    chat_messages: int = Field(default=0, ge=0, description="Written messages (chat, questions, answers).")
    words_spoken: int = Field(default=0, ge=0, description="Words of the participant's transcribed speech.")
    on_topic_ratio: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Share of the participant's judged messages/transcripts that were on topic (relevance to the "
        "lesson); None when none was judged (no lesson context, relevance off, only short messages).",
    )


class SessionSummary(BaseModel):
    """Per-participant and class-level figures for a whole session."""

    model_config = ConfigDict(extra="forbid")

    participants: dict[str, ParticipantSummary] = Field(default_factory=dict)
    duration_s: float = Field(default=0.0, ge=0.0)
    engagement_mean: float = Field(default=0.0, ge=0.0, le=1.0)
    attentive_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    teacher_talk_share: float = Field(default=0.0, ge=0.0, le=1.0)
    talk_equity_gini: float = Field(default=0.0, ge=0.0, le=1.0)
    hand_equity_gini: float = Field(default=0.0, ge=0.0, le=1.0)
    mean_wait_time_s: float | None = None
    alerts_raised: int = Field(default=0, ge=0)
    questions_students: int = Field(default=0, ge=0, description="Questions asked by students.")
    questions_teacher: int = Field(default=0, ge=0, description="Questions asked by the teacher.")
    teacher_questions_answered: int = Field(
        default=0, ge=0, description="Teacher questions a student responded to (message, poll answer or speech)."
    )
    response_latency_s: float | None = Field(
        default=None, ge=0.0, description="Median delay from a teacher's question to the first student response."
    )
    participation_equity_gini: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Gini of student participation over voice and chat (each student's mean of talk-time share "
        "and message share); 0 = equal.",
    )


class QuestionItem(BaseModel):
    """One question asked in the session (the report's question list)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str
    t: float = Field(ge=0.0, description="Session time it was asked (s).")
    participant: str
    role: Role
    kind: str = Field(description="Interaction kind (question, chat, answer).")
    source: str = Field(description="platform, join_page or speech.")
    on_topic: bool | None = None
    text: str | None = Field(
        default=None, description="Only when the text was kept (CLASSPULSE_KEEP_TEXT=true, or replay's own chat file)."
    )
    answered: bool = Field(default=False, description="A student responded (teacher question) or someone replied.")
    response_s: float | None = Field(default=None, description="Teacher question: delay to the first student response.")
    responder: str | None = Field(default=None, description="Teacher question: who responded first.")


class TimelineRow(BaseModel):
    """One participant during one second of media (``t`` = start of that second)."""

    model_config = ConfigDict(extra="forbid")

    t: float
    participant: str
    present: bool
    attentive: bool
    speaking: bool
    hand_raised: bool
    engagement: float = Field(ge=0.0, le=1.0)
    confidence: float = Field(ge=0.0, le=1.0)


class ReportSession(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    source: str
    duration_s: float = Field(ge=0.0)


class SpeakingAttribution(BaseModel):
    """How a gallery participant's speaking seconds were attributed from the mixed audio."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(description="The rule (docs/replay.md#a-gallery-recording): `mouth-voice-covariance`.")
    seconds_attributed: float = Field(ge=0.0, description="Voiced seconds given to this participant.")
    seconds_unattributed: float = Field(
        ge=0.0, description="Voiced seconds given to nobody although this participant's mouth moved with them "
        "(tied with another moving mouth).",
    )


class ReportParticipant(BaseModel):
    """One participant of the report; ``source`` only in a class replay (folder or manifest), ``bbox`` and
    ``speaking_attribution`` only in a gallery replay."""

    model_config = ConfigDict(extra="forbid")

    id: str
    role: Literal["student", "teacher"] = "student"
    source: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="The recording this participant came from, as given (the file name in a folder, the manifest's "
        "`file`); absent for a single recording and for live sessions.",
    )
    bbox: list[int] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        min_length=4,
        max_length=4,
        description="Gallery replay: this participant's tile `[x, y, w, h]` in pixels of the recording's frame.",
    )
    speaking_attribution: SpeakingAttribution | None = Field(default=None, exclude_if=lambda v: v is None)


class GalleryAttribution(BaseModel):
    """Gallery replay: the mixed audio's voiced seconds and how they were attributed."""

    model_config = ConfigDict(extra="forbid")

    method: str
    window_s: float = Field(gt=0.0, description="Window of the mouth-voice comparison, centred on each chunk.")
    voiced_s: float = Field(ge=0.0, description="Seconds of the mixed audio with voice.")
    attributed_s: float = Field(ge=0.0, description="Of those, given to one participant.")
    tied_s: float = Field(ge=0.0, description="Unattributed: two or more mouths moved with the voice.")
    no_mouth_s: float = Field(ge=0.0, description="Unattributed: no visible mouth moved with the voice.")


class GalleryInfo(BaseModel):
    """Gallery replay: the frame, the tiles found and the speaker attribution."""

    model_config = ConfigDict(extra="forbid")

    frame: list[int] = Field(min_length=2, max_length=2, description="Recording frame `[width, height]` in pixels.")
    tiles: int = Field(ge=0)
    samples: int = Field(ge=0, description="Frames sampled to find the tiles.")
    attribution: GalleryAttribution | None = None


class TranscriptLine(BaseModel):
    """One transcribed speaking segment (``replay --transcripts``); personal data."""

    model_config = ConfigDict(extra="forbid")

    participant: str
    start: float = Field(ge=0.0, description="Segment start, seconds of media (a class: of the session clock).")
    end: float = Field(ge=0.0, description="Segment end, seconds of media (a class: of the session clock).")
    text: str


class ReportPrivacy(BaseModel):
    """The session's privacy controls as they shaped the report (absent when none applied)."""

    model_config = ConfigDict(extra="forbid")

    aggregate_only: bool = Field(
        default=False, description="Class figures only: no participants, timeline rows or per-student summary."
    )
    opted_out: list[str] = Field(
        default_factory=list, description="Participants who opted out: listed here only, nowhere else in the report."
    )


class AnalysisInfo(BaseModel):
    """Which perception backend and device produced the scores (``CLASSPULSE_INFERENCE_BACKEND`` / ``_DEVICE``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = Field(min_length=1, max_length=64, description="Perception backend, e.g. 'mediapipe' or 'torch'.")
    device: str = Field(min_length=1, max_length=64, description="Where perception ran, e.g. 'cpu' or 'cuda'.")


class Report(BaseModel):
    """``report.json`` written by ``classpulse replay``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    session: ReportSession
    participants: list[ReportParticipant]
    timeline: list[TimelineRow]
    summary: SessionSummary
    questions: list[QuestionItem] = Field(default_factory=list, description="Questions asked, oldest first.")
    warnings: list[str] = Field(default_factory=list, description="E.g. media truncated, no audio track.")
    transcript: list[TranscriptLine] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="What each participant said, by speaking segment, in time order: only with "
        "`replay --transcripts` (absent otherwise; words_spoken and questions are counted either way).",
    )
    attendance: Attendance | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Join/leave times, attended share and late joiners (shared/contracts/attendance.py).",
    )
    analysis: AnalysisInfo | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Which perception backend and device analysed the media (absent in reports made before it "
        "was recorded, and in reports rebuilt from score events).",
    )
    gallery: GalleryInfo | None = Field(default=None, exclude_if=lambda v: v is None,
                                        description="Gallery replay only: layout and speaker attribution.")
    privacy: ReportPrivacy | None = Field(default=None, exclude_if=lambda v: v is None,
                                          description="Opt-outs and aggregate-only mode, when the session had any.")
