"""Several perception backends in threads: one batch's frames of different participants in parallel.

mediapipe releases the GIL while its graphs run, so N backend instances (each with its own
graphs) in N threads use N cores. A participant always goes to the same instance (its
tracking-mode mesh graph is cached there; its crop hint travels in the request), and each
instance handles its share of a batch in order. Instances
past the first load on first use, so a single-participant replay pays for one.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from services.inference.perception import PerceptionBackend, PerceptionRequest, PerceptionResult


class ThreadedPerception:
    """A PerceptionBackend that fans one batch out over ``workers`` backend instances."""

    def __init__(self, *, factory: Callable[[], PerceptionBackend], workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._backends = [factory() for _ in range(workers)]
        self.name = f"{self._backends[0].name}x{workers}"
        self._pool: ThreadPoolExecutor | None = None
        self._loaded = [False] * workers

    def _slot(self, key: str) -> int:
        return zlib.crc32(key.encode()) % len(self._backends)

    def load(self) -> None:
        self._ensure(0)
        self._pool = ThreadPoolExecutor(max_workers=len(self._backends), thread_name_prefix="classpulse-perception")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for backend, loaded in zip(self._backends, self._loaded, strict=True):
            if loaded:
                backend.close()
        self._loaded = [False] * len(self._backends)

    def _ensure(self, slot: int) -> None:
        if not self._loaded[slot]:
            self._backends[slot].load()
            self._loaded[slot] = True

    def forget(self, key: str) -> None:
        self._backends[self._slot(key)].forget(key)

    def analyze(self, requests: Sequence[PerceptionRequest]) -> list[PerceptionResult]:
        if self._pool is None:
            raise RuntimeError("ThreadedPerception used before load()")
        shares: dict[int, list[int]] = {}
        for i, req in enumerate(requests):
            shares.setdefault(self._slot(req.key), []).append(i)
        for slot in shares:
            self._ensure(slot)
        if len(shares) == 1:
            (slot,) = shares
            return self._backends[slot].analyze(requests)
        futures = {
            slot: self._pool.submit(self._backends[slot].analyze, [requests[i] for i in idx])
            for slot, idx in shares.items()
        }
        out: list[PerceptionResult | None] = [None] * len(requests)
        for slot, idx in shares.items():
            for i, result in zip(idx, futures[slot].result(), strict=True):
                out[i] = result
        return [r for r in out if r is not None]
