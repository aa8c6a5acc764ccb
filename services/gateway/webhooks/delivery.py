"""The webhook delivery loop: claims due deliveries from the store, POSTs them signed, retries with
exponential backoff and jitter, dead-letters after the last attempt.

One loop per gateway process (supervised task ``gateway-webhooks``). Pending deliveries live in the
store, so a restarted gateway (or another one on the same Redis) continues them; an attempt whose
gateway died is claimed again when its lease runs out. A 2xx answer delivers; anything else (another
status, a timeout, a refused connection) is retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import suppress
from dataclasses import dataclass

import aiohttp

from services.gateway.webhooks.signing import signature
from services.gateway.webhooks.store import PendingDelivery, StoredEndpoint, WebhookStore
from shared.contracts.webhooks import EVENT_HEADER, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, DeadLetter
from shared.log import get_logger, spawn
from shared.metrics import Metrics

_log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class DeliveryPolicy:
    """Attempts, timeouts and backoff (from :class:`services.gateway.settings.GatewaySettings`)."""

    max_attempts: int = 8
    timeout_s: float = 10.0
    backoff_s: float = 1.0
    backoff_max_s: float = 300.0
    poll_s: float = 0.5
    concurrency: int = 8
    dead_letters: int = 1000

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones: ``backoff * 2^(n-1)`` capped, then
        "equal jitter" (half fixed, half random) so that receivers that failed together are not hit together."""
        base = min(self.backoff_max_s, self.backoff_s * 2.0 ** (attempts - 1))
        return float(base / 2 + rng.uniform(0.0, base / 2))

    @property
    def lease_s(self) -> float:
        return self.timeout_s + 5.0


class WebhookDeliverer:
    def __init__(
        self, *, store: WebhookStore, metrics: Metrics, policy: DeliveryPolicy, rng: random.Random | None = None
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._policy = policy
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """A delivery was enqueued: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled (each run opens its own HTTP session)."""
        policy = self._policy
        timeout = aiohttp.ClientTimeout(total=policy.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "ClassPulse-Webhooks/1"}) as http:
            _log.info("webhook delivery state %s -> %s", "starting", "running")
            try:
                while True:
                    free = policy.concurrency - len(self._running)
                    if free > 0:
                        for delivery in await self._store.claim(time.time(), lease_s=policy.lease_s, limit=free):
                            task = spawn(self._attempt(http, delivery), name=f"webhook-{delivery.id}")  # errors logged
                            self._running.add(task)
                            task.add_done_callback(self._running.discard)
                    self._metrics.webhook_pending.set(await self._store.pending())
                    self._wake.clear()
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), policy.poll_s)
            finally:
                for task in list(self._running):
                    task.cancel()
                await asyncio.gather(*self._running, return_exceptions=True)
                _log.info("webhook delivery state %s -> %s", "running", "stopped")

    async def _endpoint(self, delivery: PendingDelivery) -> StoredEndpoint | None:
        for scope in (delivery.session, None):
            for stored in await self._store.endpoints(scope):
                if stored.endpoint.id == delivery.endpoint:
                    return stored
        return None

    async def _attempt(self, http: aiohttp.ClientSession, delivery: PendingDelivery) -> None:
        m = self._metrics
        stored = await self._endpoint(delivery)
        if stored is None:  # removed since: nobody to deliver to
            await self._store.finish(delivery)
            m.webhook_deliveries_total.labels(delivery.event, "dropped").inc()
            return
        body = delivery.body.encode()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            ID_HEADER: delivery.id,
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: signature(stored.secret, stamp, body),
            EVENT_HEADER: delivery.event,
        }
        started = time.perf_counter()
        error = ""
        try:
            async with http.post(stored.endpoint.url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    error = f"http {resp.status}"
        except TimeoutError:
            error = "timeout"
        except aiohttp.ClientError as exc:
            error = f"connection error ({type(exc).__name__})"
        m.webhook_attempt_seconds.observe(time.perf_counter() - started)
        delivery.attempts += 1
        m.webhook_attempts_total.labels("ok" if not error else error.split(" ")[0]).inc()
        if not error:
            await self._store.finish(delivery)
            m.webhook_deliveries_total.labels(delivery.event, "delivered").inc()
            m.webhook_delivery_seconds.labels(delivery.event).observe(max(0.0, time.time() - delivery.created))
            _log.info("webhook delivery state %s -> %s", "pending", "delivered",
                      extra={"delivery": delivery.id, "attempts": delivery.attempts})
            return
        delivery.last_error = error
        if delivery.attempts >= self._policy.max_attempts:
            letter = DeadLetter(
                id=delivery.id, endpoint=delivery.endpoint, url=stored.endpoint.url, session=delivery.session,
                event=delivery.event, attempts=delivery.attempts, last_error=error, created=delivery.created,
                failed_at=time.time(),
            )
            await self._store.dead_letter(letter, cap=self._policy.dead_letters)
            await self._store.finish(delivery)
            m.webhook_deliveries_total.labels(delivery.event, "dead_lettered").inc()
            _log.warning("webhook delivery state %s -> %s: %s", "pending", "dead_lettered", error,
                         extra={"delivery": delivery.id, "attempts": delivery.attempts})
            return
        wait = self._policy.delay(delivery.attempts, self._rng)
        await self._store.reschedule(delivery, time.time() + wait)
        m.webhook_deliveries_total.labels(delivery.event, "retried").inc()
        _log.info("webhook delivery state %s -> %s: %s", "attempted", "retry", error,
                  extra={"delivery": delivery.id, "attempts": delivery.attempts, "retry_in_s": round(wait, 2)})
