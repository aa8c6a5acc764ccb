"""Privacy controls: a session's privacy policy, the events that change it, and the erasure receipt.

``SessionPrivacy`` is the policy of one session: who opted out (no media analysed, no scores;
presence shown only as "opted out"), whether the session is aggregate-only (no per-student rows
leave the aggregator; live and REST show class figures only), and when its data was erased.
It is kept in Redis under ``shared.contracts.topics.privacy_key(session)`` (in memory in
embedded mode), written by the gateway, read by ingest and inference (media of opted-out
participants is dropped before analysis), the aggregator and every gateway.

``PrivacyEvent`` (topic ``classpulse.privacy``, keyed by session, co-partitioned with the
aggregator's inputs) records every change in the event log.

Producer: services.gateway (``PUT/DELETE .../participants/{p}/opt-out``, ``PUT .../privacy``,
``DELETE /api/sessions/{s}``). Consumers: services.aggregator (policy + erasure of its state),
services.gateway (every instance's history), Kafka users (an audit trail of the changes).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PrivacyKind = Literal["opted_out", "opted_in", "aggregate_only", "erased"]
PrivacyActor = Literal["student", "teacher", "platform", "operator"]
MAX_OPTED_OUT = 10_000


class SessionPrivacy(BaseModel):
    """The privacy policy of one session (``GET /api/sessions/{s}/privacy``; the stored value)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    session: str
    aggregate_only: bool = Field(
        default=False,
        description="No per-student rows leave the aggregator: live and REST show class figures only.",
    )
    opted_out: list[str] = Field(
        default_factory=list,
        max_length=MAX_OPTED_OUT,
        description="Participants who opted out: their media is dropped before analysis, they get no "
        "scores, and they are shown only as 'opted out'. Empty in answers of aggregate-only sessions.",
    )
    erased_at: float | None = Field(
        default=None, description="Wall-clock time (epoch s) of the last erasure; events before it are ignored."
    )
    updated: float = Field(default=0.0, description="Wall-clock time (epoch s) of the last change.")

    def is_opted_out(self, participant: str) -> bool:
        return participant in self.opted_out

    def hides(self, participant: str | None) -> bool:
        """Whether per-student data about ``participant`` (None: class-level) must not be shown."""
        if participant is None:
            return False
        return self.aggregate_only or participant in self.opted_out

    def with_opt_out(self, participant: str, opted_out: bool, *, now: float) -> SessionPrivacy:
        members = [p for p in self.opted_out if p != participant]
        if opted_out:
            members.append(participant)
        return self.model_copy(update={"opted_out": sorted(members), "updated": now})


class PrivacyEvent(BaseModel):
    """A change of a session's privacy policy, or its erasure (topic ``classpulse.privacy``).

    Producer: services.gateway. Consumers: services.aggregator, services.gateway, Kafka users.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    event_id: str = Field(description="Stable id '<session>/privacy/<kind>/<participant or *>/<ts in ms>'.")
    session: str
    kind: PrivacyKind = Field(
        description="'opted_out' / 'opted_in': one participant's opt-out changed; 'aggregate_only': the "
        "session's mode changed (see aggregate_only); 'erased': the session's data was erased."
    )
    participant: str | None = Field(default=None, description="The participant of an opt-out change.")
    aggregate_only: bool | None = Field(default=None, description="The new mode of an 'aggregate_only' event.")
    by: PrivacyActor = Field(description="Role of the token that made the change.")
    ts: float = Field(description="Wall-clock time of the change (epoch s).")

    @staticmethod
    def make_id(session: str, kind: PrivacyKind, participant: str | None, ts: float) -> str:
        return f"{session}/privacy/{kind}/{participant or '*'}/{int(ts * 1000)}"


class ErasedItem(BaseModel):
    """One store and what was (or was not) erased there."""

    model_config = ConfigDict(extra="forbid")

    store: str = Field(description="Where: 'redis', 'gateway', 'aggregator', 'kafka', 'memory' ...")
    what: str = Field(description="What data, in words.")
    count: int | None = Field(default=None, ge=0, description="How many keys/entries/records, where known.")
    until: str | None = Field(default=None, description="When it goes by itself (for what was not erased).")


class ErasureReport(BaseModel):
    """``DELETE /api/sessions/{s}``: what was erased, what was asked of other services, what could not be."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    session: str
    erased_at: float
    erased: list[ErasedItem] = Field(description="Erased by this request before it answered.")
    requested: list[ErasedItem] = Field(
        description="Asked of other services through classpulse.privacy ('erased' event); they erase on receipt."
    )
    not_erased: list[ErasedItem] = Field(description="What this service cannot erase, and when it goes.")
