"""Rate limits per token and per client address: token buckets, ``429`` with ``Retry-After``.

:func:`add_rate_limits` installs a middleware that checks the requests a predicate selects (WHIP
``POST``, the REST API) against two limiters: one keyed by the bearer token (header or ``?token=``;
a hash of it, so no token is kept in memory), one by the client address. A refused request gets
``429`` with one readable line and ``Retry-After`` (whole seconds), and is counted in
``classpulse_rate_limited_total{service, limit}``. Memory is bounded: each limiter keeps at most
:data:`MAX_KEYS` buckets (least recently used forgotten).

Behind a reverse proxy every client has the proxy's address: set ``CLASSPULSE_TRUST_FORWARDED_FOR``
so the rightmost ``X-Forwarded-For`` entry (the one your proxy added) counts instead.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from shared.metrics import Metrics

MAX_KEYS = 50_000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FORWARDED_INTERNAL = "X-ClassPulse-Forwarded"
"""Set by ClassPulse's own proxies (``up`` to its ingest processes, ingest worker to worker) on loopback."""


class TokenBuckets:
    """Token buckets of ``rate`` per second holding up to ``burst``, one per key; ``rate`` 0: no limit."""

    def __init__(self, *, rate: float, burst: float, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """0 when the request may go ahead (one token taken), else the seconds until it could."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True)
class RateLimits:
    """Requests per second per token and per address (0: off) and the burst, in seconds of that rate."""

    per_token: float
    per_address: float
    burst_s: float
    what: str
    """Named in the 429 line: 'WHIP publish requests', 'API requests'."""
    trust_forwarded_for: bool = False
    cors_origin: str = ""
    """Sent as Access-Control-Allow-Origin on a 429 (WHIP answers browsers); empty: none."""


def request_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    return request.query.get("token") or None


def client_address(request: web.BaseRequest, *, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return request.remote or "unknown"


def forwarded_internally(request: web.Request) -> bool:
    """A request ClassPulse forwarded to itself on loopback: it was limited where it came in."""
    return bool(request.headers.get(FORWARDED_INTERNAL)) and request.remote in ("127.0.0.1", "::1")


def add_rate_limits(
    app: web.Application,
    *,
    limits: RateLimits,
    applies: Callable[[web.Request], bool],
    service: str,
    metrics: Metrics,
) -> None:
    """Limit the requests ``applies`` selects on ``app`` (a middleware)."""
    by_token = TokenBuckets(rate=limits.per_token, burst=limits.per_token * limits.burst_s)
    by_address = TokenBuckets(rate=limits.per_address, burst=limits.per_address * limits.burst_s)

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" or not applies(request) or forwarded_internally(request):
            return await handler(request)
        address = client_address(request, trust_forwarded_for=limits.trust_forwarded_for)
        wait = by_address.take(address)
        limit = "address"
        if not wait:
            token = request_token(request)
            if token is not None:
                wait = by_token.take(hashlib.sha256(token.encode()).hexdigest()[:32])
                limit = "token"
        if wait:
            metrics.rate_limited_total.labels(service, limit).inc()
            retry = max(1, math.ceil(wait))
            headers = {"Retry-After": str(retry)}
            if limits.cors_origin:
                headers |= {"Access-Control-Allow-Origin": limits.cors_origin,
                            "Access-Control-Expose-Headers": "Retry-After"}
            return web.Response(
                status=429, text=f"too many {limits.what} from this {limit}; retry in {retry} s\n", headers=headers
            )
        return await handler(request)

    app.middlewares.append(rate_limit)
