"""A participant's recent interactions (chat, questions, polls ...) as fusion inputs (the text modality).

Part of :class:`services.inference.state.ParticipantState` (snapshotted with it). Only derived
fields are kept -- when it happened, whether it asked something, whether it was an
interaction that counts as activity -- never the text. The text signals are measured from a
participant's first interaction on; before it they stay unmeasured (no evidence), so a
participant who never interacts scores exactly as without the text modality.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from services.inference.fusion_layout import IDX
from shared.contracts.interactions import InteractionEvent
from shared.signals import TEXT_ACTIVITY_S, TEXT_QUESTION_S

HISTORY = 64
"""Most recent interactions kept per participant."""

TextRow = tuple[float, bool, bool]
"""(ts epoch s, asked a question, counts as activity)."""


@dataclass
class TextActivity:
    """Recent interactions of one participant, bounded, in time order."""

    recent: deque[TextRow] = field(default_factory=lambda: deque(maxlen=HISTORY))
    seen_ids: deque[str] = field(default_factory=lambda: deque(maxlen=HISTORY))
    """Ids of the recent events (a redelivered event is not counted twice)."""

    @property
    def measured(self) -> bool:
        return bool(self.recent)

    def add(self, event: InteractionEvent) -> bool:
        """Keep one event's derived features; False when it was seen already."""
        if event.event_id in self.seen_ids:
            return False
        self.seen_ids.append(event.event_id)
        row = (event.ts, event.asks, event.source != "speech")  # speech is already the voice signal
        rows = sorted([*self.recent, row])
        self.recent.clear()
        self.recent.extend(rows[-HISTORY:])
        return True

    def put(self, vec: NDArray[np.float32], mask: NDArray[np.float32], *, at: float) -> None:
        """Fill the text entries of a step at capture time ``at`` (epoch s); nothing before the first event."""
        if not self.recent:
            return
        asked = any(asks and at - TEXT_QUESTION_S <= ts <= at for ts, asks, _ in self.recent)
        activity = sum(1 for ts, _, active in self.recent if active and at - TEXT_ACTIVITY_S <= ts <= at)
        vec[IDX["asked_question"]], mask[IDX["asked_question"]] = float(asked), 1.0
        vec[IDX["chat_activity"]], mask[IDX["chat_activity"]] = float(activity), 1.0

    def dump(self) -> tuple[list[TextRow], list[str]]:
        """Snapshot form: the rows and the recent ids."""
        return list(self.recent), list(self.seen_ids)

    @classmethod
    def load(cls, rows: list[TextRow], ids: list[str]) -> TextActivity:
        out = cls()
        out.recent.extend((float(ts), bool(asks), bool(active)) for ts, asks, active in rows)
        out.seen_ids.extend(str(i) for i in ids)
        return out
