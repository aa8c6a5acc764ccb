"""What creates webhook deliveries: a session's end (``session_ended`` lifecycle event, read by the
gateway's history reader) and raised alerts.

Every gateway reads every event, so each one would fire: the store's once-only marker per event makes
one delivery per endpoint across all gateways (and across a restart that reads the log again). The
delivery id is derived from the endpoint and the event, so even a repeat would carry the same
idempotency key.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from services.gateway.history import SessionHistory
from services.gateway.report import build_report
from services.gateway.webhooks.store import PendingDelivery, WebhookStore
from shared.contracts.events import Alert, LifecycleEvent
from shared.contracts.webhooks import WebhookEvent, WebhookPayload
from shared.log import get_logger, spawn

_log = get_logger(__name__)


def delivery_id(endpoint: str, event: WebhookEvent, key: str) -> str:
    """The idempotency key of one event's delivery to one endpoint (stable across gateways and retries)."""
    return "whd_" + hashlib.sha256(f"{endpoint}\x1f{event}\x1f{key}".encode()).hexdigest()[:32]


@dataclass(frozen=True, kw_only=True)
class TriggerPolicy:
    settle_s: float = 2.0
    timeline: bool = False
    dedupe_ttl_s: float = 7 * 86_400.0


class WebhookTrigger:
    def __init__(
        self, *, store: WebhookStore, history: SessionHistory, policy: TriggerPolicy, wake: Callable[[], None]
    ) -> None:
        self._store = store
        self._history = history
        self._policy = policy
        self._wake = wake
        self._tasks: set[asyncio.Task[object]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task: asyncio.Task[object] = spawn(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _stale(self, ts: float) -> bool:
        return time.time() - ts > self._policy.dedupe_ttl_s

    def lifecycle(self, event: LifecycleEvent) -> None:
        """Called for every lifecycle event the history reader applied."""
        if event.kind == "session_ended" and not self._stale(event.ts):
            self._spawn(self._session_ended(event), "webhook-session-ended")

    def alert(self, event: Alert) -> None:
        """Called for every alert the history reader applied."""
        if event.state == "raised" and not self._stale(event.timing.capture_ts):
            payload = WebhookPayload(id="", event="alert.raised", session=event.session, created=0.0, alert=event)
            self._spawn(self.fire(event.session, "alert.raised", event.event_id, payload), "webhook-alert")

    async def _session_ended(self, event: LifecycleEvent) -> None:
        await asyncio.sleep(self._policy.settle_s)  # the last scores travel on another topic
        record = self._history.get(event.session)
        if record is None:
            return
        report = build_report(record, timeline=self._policy.timeline)
        payload = WebhookPayload(id="", event="session.ended", session=event.session, created=0.0, report=report)
        await self.fire(event.session, "session.ended", event.event_id, payload)

    async def fire(self, session: str, event: WebhookEvent, key: str, payload: WebhookPayload) -> int:
        """Enqueue ``payload`` for every endpoint of ``session`` and of the deployment that takes ``event``;
        the number enqueued (0 when none listens or another gateway did it already)."""
        endpoints = [e for e in (*await self._store.endpoints(session), *await self._store.endpoints(None))
                     if event in e.endpoint.events]
        if not endpoints:
            return 0
        if not await self._store.mark_fired(session, f"{event}:{key}", self._policy.dedupe_ttl_s):
            return 0
        now = time.time()
        for stored in endpoints:
            did = delivery_id(stored.endpoint.id, event, key)
            body = payload.model_copy(update={"id": did, "created": now}).model_dump_json()
            delivery = PendingDelivery(id=did, endpoint=stored.endpoint.id, session=session, event=event,
                                       created=now, body=body)
            await self._store.enqueue(delivery, now)
        _log.info("webhook event state %s -> %s", "seen", "enqueued",
                  extra={"event": event, "endpoints": len(endpoints)})
        self._wake()
        return len(endpoints)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
