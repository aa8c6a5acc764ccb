"""Attendance of one session: join and leave times per participant (public contract, see docs/integration.md).

Producer: the aggregation core (:func:`shared.analytics.attendance.build_attendance`), in ``report.json``
(``classpulse replay`` and the gateway's live report), ``GET /api/sessions/{s}/attendance`` and the
end-of-session webhook. Consumers: classroom platforms, users. Keys may be added; the documented ones
never change meaning. JSON Schema: ``deploy/schemas/classpulse.attendance.schema.json``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.events import Role


class AttendanceInterval(BaseModel):
    """One stay in the session: from joining (or the first media) to leaving (or the last media)."""

    model_config = ConfigDict(extra="forbid")

    joined: float = Field(ge=0.0, description="Session time (s) the stay began.")
    left: float = Field(ge=0.0, description="Session time (s) the stay ended (the session end when still there).")
    open: bool = Field(
        default=False, description="No 'left' was seen: still connected when the report was made (or at its end)."
    )


class ParticipantAttendance(BaseModel):
    """One participant's stays and what they add up to."""

    model_config = ConfigDict(extra="forbid")

    role: Role = "student"
    intervals: list[AttendanceInterval] = Field(description="Stays in time order; several when they reconnected.")
    first_joined: float = Field(ge=0.0, description="Session time (s) of the first stay's start.")
    last_left: float = Field(ge=0.0, description="Session time (s) of the last stay's end.")
    attended_s: float = Field(ge=0.0, description="Seconds inside the session (sum of the stays).")
    attended_ratio: float = Field(ge=0.0, le=1.0, description="attended_s over the session's duration.")
    reconnects: int = Field(ge=0, description="Stays after the first (left and came back).")
    late: bool = Field(description="The first stay began after the late threshold (late_after_s).")


class Attendance(BaseModel):
    """Join/leave times, attended share and late joiners of one session (times: seconds of session time)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    session: str
    duration_s: float = Field(ge=0.0, description="The session's duration the ratios are shares of.")
    late_after_s: float = Field(ge=0.0, description="Threshold: a first join later than this is late.")
    participants: dict[str, ParticipantAttendance] = Field(default_factory=dict)
    late_joiners: list[str] = Field(default_factory=list, description="Participants whose first join was late.")
