"""Where webhook endpoints, pending deliveries and dead letters live: a Protocol, an in-memory store
(``classpulse up`` on memory transports; lost on restart) and Redis (:mod:`.redis_store`; survives restarts,
shared by every gateway).

Redis keys (``{s}`` = session; every session-scoped key starts ``classpulse:webhooks:session:{s}:``, so
erasing a session finds them with one SCAN pattern):

=================================================  ==========  ==============================================
key                                                type        what
=================================================  ==========  ==============================================
``classpulse:webhooks:deployment:endpoints``       hash        endpoint id -> endpoint JSON (every session)
``classpulse:webhooks:session:{s}:endpoints``      hash        endpoint id -> endpoint JSON (this session)
``classpulse:webhooks:session:{s}:delivery:{id}``  string      a pending delivery (payload, attempts)
``classpulse:webhooks:session:{s}:fired:{key}``    string      once-only marker of an event (TTL)
``classpulse:webhooks:due``                        sorted set  ``{s}/{id}`` -> time of its next attempt
``classpulse:webhooks:dead``                       list        dead letters, newest first (capped)
=================================================  ==========  ==============================================
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.webhooks import DeadLetter, WebhookEndpoint, WebhookEvent


class StoredEndpoint(BaseModel):
    """An endpoint with its secret (stored; never answered after registration)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: WebhookEndpoint
    secret: str = Field(repr=False)


class PendingDelivery(BaseModel):
    """One delivery until it succeeds or is dead-lettered."""

    model_config = ConfigDict(extra="forbid")

    id: str
    endpoint: str
    session: str
    event: WebhookEvent
    created: float
    body: str = Field(repr=False, description="The payload JSON (signed as is on every attempt).")
    attempts: int = 0
    last_error: str = ""

    @property
    def member(self) -> str:
        return f"{self.session}/{self.id}"


class WebhookStore(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def add_endpoint(self, stored: StoredEndpoint) -> None: ...
    async def endpoints(self, session: str | None) -> list[StoredEndpoint]:
        """A session's own endpoints (None: the deployment's)."""
        ...
    async def remove_endpoint(self, session: str | None, endpoint_id: str) -> bool: ...
    async def mark_fired(self, session: str, key: str, ttl_s: float) -> bool:
        """True the first time ``key`` is marked for ``session`` (within ``ttl_s``), False after."""
        ...
    async def enqueue(self, delivery: PendingDelivery, due: float) -> None: ...
    async def claim(self, now: float, *, lease_s: float, limit: int) -> list[PendingDelivery]:
        """Deliveries due by ``now``, leased for ``lease_s`` (a crashed attempt is claimed again after it)."""
        ...
    async def reschedule(self, delivery: PendingDelivery, due: float) -> None: ...
    async def finish(self, delivery: PendingDelivery) -> None:
        """Forget a delivery (delivered, dead-lettered or its endpoint removed)."""
        ...
    async def dead_letter(self, letter: DeadLetter, *, cap: int) -> None: ...
    async def dead_letters(self, limit: int) -> list[DeadLetter]: ...
    async def pending(self) -> int: ...


class MemoryWebhookStore:
    """The store of one process (embedded ``classpulse up``): nothing survives a restart."""

    def __init__(self) -> None:
        self._endpoints: dict[str | None, dict[str, StoredEndpoint]] = {}
        self._fired: dict[tuple[str, str], float] = {}
        self._deliveries: dict[str, PendingDelivery] = {}
        self._due: dict[str, float] = {}
        self._dead: list[DeadLetter] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def add_endpoint(self, stored: StoredEndpoint) -> None:
        self._endpoints.setdefault(stored.endpoint.session, {})[stored.endpoint.id] = stored

    async def endpoints(self, session: str | None) -> list[StoredEndpoint]:
        return list(self._endpoints.get(session, {}).values())

    async def remove_endpoint(self, session: str | None, endpoint_id: str) -> bool:
        return self._endpoints.get(session, {}).pop(endpoint_id, None) is not None

    async def mark_fired(self, session: str, key: str, ttl_s: float) -> bool:
        import time

        now = time.time()
        if self._fired.get((session, key), 0.0) > now:
            return False
        self._fired[(session, key)] = now + ttl_s
        return True

    async def enqueue(self, delivery: PendingDelivery, due: float) -> None:
        self._deliveries[delivery.member] = delivery
        self._due[delivery.member] = due

    async def claim(self, now: float, *, lease_s: float, limit: int) -> list[PendingDelivery]:
        due = sorted((t, m) for m, t in self._due.items() if t <= now)[:limit]
        for _, member in due:
            self._due[member] = now + lease_s
        return [self._deliveries[m].model_copy() for _, m in due]

    async def reschedule(self, delivery: PendingDelivery, due: float) -> None:
        await self.enqueue(delivery, due)

    async def finish(self, delivery: PendingDelivery) -> None:
        self._deliveries.pop(delivery.member, None)
        self._due.pop(delivery.member, None)

    async def dead_letter(self, letter: DeadLetter, *, cap: int) -> None:
        self._dead.insert(0, letter)
        del self._dead[cap:]

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        return self._dead[:limit]

    async def pending(self) -> int:
        return len(self._deliveries)
