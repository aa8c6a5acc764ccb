"""Where each session's privacy policy lives, and erasure of what the transports hold about a session.

:class:`PrivacyStore` is the Protocol; :class:`MemoryPrivacyStore` serves embedded mode (it erases
from the memory transports it was given) and :class:`shared.privacy.redis_store.RedisPrivacyStore`
distributed mode (one Redis string per session, plus the session's other Redis keys on erasure).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from shared.contracts.codec import DecodeError, media_subject
from shared.contracts.privacy import ErasedItem, SessionPrivacy
from shared.contracts.topics import state_key, summary_key
from shared.transport.leases import MemoryLeaseStore
from shared.transport.memory import MemoryLiveBus, MemoryMediaBus
from shared.transport.publishes import MemoryPublishRegistry
from shared.transport.shards import participant_key

MAX_SESSIONS = 100_000
"""Policies kept by the memory store (oldest forgotten first)."""
Change = Callable[[SessionPrivacy | None], SessionPrivacy]
"""A policy change: the stored policy (None: never set) -> the new one."""


def participant_fields(participant: str) -> set[str]:
    """Fields of a session's live state hash that hold one participant's data (``state_field``)."""
    return {f"score:{participant}", f"interaction:{participant}", f"lifecycle:{participant}"}


def is_participant_field(name: str, participant: str) -> bool:
    return name in participant_fields(participant) or (
        name.startswith(f"alert:{participant}:") and name.count(":") == participant.count(":") + 2
    )


def belongs_to(data: bytes, session: str, participant: str | None = None) -> bool:
    """Whether a media entry is of ``session`` (and ``participant``, when given)."""
    try:
        s, p = media_subject(data)
    except DecodeError:
        return False
    return s == session and (participant is None or p == participant)


class PrivacyStore(Protocol):
    """Session privacy policies, and erasure of a session's (or participant's) data in the transports."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, session: str) -> SessionPrivacy | None:
        """The stored policy of ``session`` (None: never set, the deployment default applies)."""
        ...

    async def put(self, policy: SessionPrivacy) -> None:
        """Store ``policy`` (expires after the retention)."""
        ...

    async def update(self, session: str, change: Change) -> SessionPrivacy:
        """Apply ``change`` to the stored policy atomically (concurrent writers never lose a change); the new one."""
        ...

    async def forget_participant(self, session: str, participant: str) -> list[ErasedItem]:
        """Erase one participant's live state, waiting media and inference snapshot (an opt-out)."""
        ...

    async def erase(self, session: str) -> list[ErasedItem]:
        """Erase what the transports hold about ``session`` (the policy itself is replaced by the caller)."""
        ...


class MemoryPrivacyStore:
    """:class:`PrivacyStore` in one process, erasing from the memory transports it was given."""

    def __init__(
        self,
        *,
        media: MemoryMediaBus | None = None,
        live: MemoryLiveBus | None = None,
        publishes: MemoryPublishRegistry | None = None,
        leases: MemoryLeaseStore | None = None,
        retention_s: float = 7 * 24 * 3600.0,
    ) -> None:
        self._media, self._live, self._publishes, self._leases = media, live, publishes, leases
        self._retention_s = retention_s
        self._policies: OrderedDict[str, tuple[SessionPrivacy, float]] = OrderedDict()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get(self, session: str) -> SessionPrivacy | None:
        item = self._policies.get(session)
        if item is None:
            return None
        if item[1] <= time.time():
            del self._policies[session]
            return None
        return item[0]

    async def put(self, policy: SessionPrivacy) -> None:
        self._policies[policy.session] = (policy, time.time() + self._retention_s)
        self._policies.move_to_end(policy.session)
        while len(self._policies) > MAX_SESSIONS:
            self._policies.popitem(last=False)

    async def update(self, session: str, change: Change) -> SessionPrivacy:
        policy = change(await self.get(session))  # one event loop, no await in between: atomic
        await self.put(policy)
        return policy

    async def forget_participant(self, session: str, participant: str) -> list[ErasedItem]:
        out: list[ErasedItem] = []
        if self._live is not None:
            n = self._live.delete_state(state_key(session), lambda f: is_participant_field(f, participant))
            out.append(ErasedItem(store="memory", what="live state of the participant", count=n))
        if self._media is not None:
            n = self._media.discard(lambda d: belongs_to(d, session, participant))
            out.append(ErasedItem(store="memory", what="media waiting for analysis", count=n))
        if self._leases is not None:
            n = self._leases.forget_states(lambda k: k == participant_key(session, participant))
            out.append(ErasedItem(store="memory", what="inference state snapshot", count=n))
        return out

    async def erase(self, session: str) -> list[ErasedItem]:
        out: list[ErasedItem] = []
        if self._live is not None:
            n = self._live.delete_state(state_key(session)) + self._live.delete_state(summary_key(session))
            out.append(ErasedItem(store="memory", what="live state and session summary", count=n))
        if self._media is not None:
            n = self._media.discard(lambda d: belongs_to(d, session))
            out.append(ErasedItem(store="memory", what="media waiting for analysis", count=n))
        if self._publishes is not None:
            n = self._publishes.forget(lambda k: k.startswith(f"{session}/"))
            out.append(ErasedItem(store="memory", what="publish epochs", count=n))
        if self._leases is not None:
            n = self._leases.forget_states(lambda k: k.startswith(f"{session}/"))
            out.append(ErasedItem(store="memory", what="inference state snapshots", count=n))
        return out
