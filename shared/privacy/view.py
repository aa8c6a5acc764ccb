"""A cached view of the privacy store: what every hot path asks (is this participant opted out?).

Embedded mode reads the in-process store every time (``refresh_s=0``); distributed mode re-reads
a session's policy from Redis at most every ``CLASSPULSE_PRIVACY_REFRESH_S``. A store that cannot
be read leaves the last known policy in force (counted); a session never seen gets the
deployment default (``CLASSPULSE_AGGREGATE_ONLY``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from shared.contracts.privacy import PrivacyEvent, SessionPrivacy
from shared.log import get_logger
from shared.metrics import Metrics
from shared.privacy.store import PrivacyStore

_log = get_logger(__name__)
MAX_CACHED = 10_000


class PrivacyView:
    """Per-session policies from a :class:`PrivacyStore`, cached for ``refresh_s``."""

    def __init__(
        self,
        store: PrivacyStore,
        *,
        aggregate_only: bool = False,
        refresh_s: float = 0.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.aggregate_only = aggregate_only
        """The deployment default: every session aggregate-only."""
        self._refresh_s = refresh_s
        self._metrics = metrics
        self._clock = clock
        self._cache: OrderedDict[str, tuple[SessionPrivacy, float]] = OrderedDict()

    def default(self, session: str) -> SessionPrivacy:
        return SessionPrivacy(session=session, aggregate_only=self.aggregate_only)

    def effective(self, policy: SessionPrivacy) -> SessionPrivacy:
        """``policy`` with the deployment default applied (aggregate-only everywhere wins)."""
        if self.aggregate_only and not policy.aggregate_only:
            return policy.model_copy(update={"aggregate_only": True})
        return policy

    def cached(self, session: str) -> SessionPrivacy:
        """The last policy read (no I/O): the default for a session not read yet."""
        item = self._cache.get(session)
        return item[0] if item is not None else self.default(session)

    def remember(self, policy: SessionPrivacy) -> SessionPrivacy:
        """Put a policy this process just wrote into the cache; the effective policy."""
        effective = self.effective(policy)
        self._cache[policy.session] = (effective, self._clock())
        self._cache.move_to_end(policy.session)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return effective

    def note(self, change: PrivacyEvent) -> None:
        """Apply a change read from ``classpulse.privacy`` to the cached policy at once (the store is
        re-read at the next refresh anyway): sync callers (:meth:`cached`) see it without waiting."""
        from shared.analytics.privacy import apply_event

        if change.kind != "erased":
            self.remember(apply_event(self.cached(change.session), change))

    async def get(self, session: str) -> SessionPrivacy:
        """The session's policy, re-read when older than ``refresh_s``."""
        item = self._cache.get(session)
        if item is not None and self._clock() - item[1] < self._refresh_s:
            return item[0]
        try:
            stored = await self.store.get(session)
        except Exception as exc:  # Redis down or a bad value: keep what is known
            if self._metrics is not None:
                self._metrics.errors_total.labels("privacy", "policy_read").inc()
            _log.warning("privacy policy %s -> %s: %s", "stale", "kept", type(exc).__name__)
            return item[0] if item is not None else self.default(session)
        if stored is None:
            if item is not None and item[0].updated == 0.0 and item[0].erased_at is None:
                self._cache[session] = (item[0], self._clock())  # still the default: no new model per call
                return item[0]
            stored = self.default(session)
        elif item is not None and stored is item[0]:
            return stored  # the memory store hands out the same object: nothing changed
        return self.remember(stored)

    async def opted_out(self, session: str, participant: str) -> bool:
        return (await self.get(session)).is_opted_out(participant)
