"""Supervised background work and the health registry ``/healthz`` and ``/readyz`` report.

Every long-lived task of a service (readers, writers, heartbeats, lease renewals, snapshots,
history readers, aggregation loops) runs under :meth:`Supervisor.spawn`::

    supervisor.spawn("inference-reader", worker.read_loop)

The supervisor calls the factory for a fresh coroutine, and when it raises:

* a *transient* broker error (:func:`is_transient`: Redis connection/timeout errors, the
  aiokafka ``KafkaError`` family, OS-level connection errors) -> retry after a bounded
  exponential backoff with jitter (``task_backoff_initial_ms`` doubling up to
  ``task_backoff_max_ms``);
* any other exception -> logged with its traceback, restarted after the same backoff;
* it returns -> the task is done (``stopped``), never restarted.

While a task is down (between a failure and ``task_settle_s`` of clean running after its
restart) it counts as ``retrying`` and the service as unhealthy: :meth:`HealthRegistry.report`
says so, and ``/healthz`` answers 503 with every task's status. A task down for longer than
``task_give_up_s`` makes the supervisor call ``on_fatal`` with one clear message, which
:func:`shared.service.run_service` turns into one ``error: ...`` line and exit status
:data:`EXIT_UNRECOVERABLE`, so the orchestrator (compose ``restart``, Kubernetes) restarts
the process.

A task may also report its own health: :meth:`TaskHealth.degraded` marks it down without
raising (a loop that handles an error itself and keeps trying), :meth:`TaskHealth.ok` up again;
the same give-up bound applies.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from shared.contracts.timing import wall_clock
from shared.log import get_logger

if TYPE_CHECKING:
    from shared.settings import CommonSettings

log = get_logger(__name__)

EXIT_UNRECOVERABLE = 3
"""Exit status of a service that gave up on a task (the orchestrator restarts it)."""

State = Literal["starting", "running", "retrying", "stopped", "failed"]
_DOWN: frozenset[State] = frozenset({"retrying", "failed"})
"""Unhealthy states (``/healthz`` 503); ``starting`` is not ready yet (``/readyz`` 503) but healthy."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a broker being unreachable or slow (retry), not a bug (restart, logged)."""
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        if isinstance(exc, RedisConnectionError | RedisTimeoutError):
            return True
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    try:
        from aiokafka.errors import KafkaError

        if isinstance(exc, KafkaError):
            return True
    except ImportError:  # pragma: no cover - aiokafka is a dependency
        pass
    return isinstance(exc, ConnectionError | TimeoutError)


def broker_unreachable(exc: BaseException) -> str | None:
    """``"Redis"`` or ``"Kafka"`` when ``exc`` (or what it wraps) is that broker being unreachable."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        module = type(e).__module__
        if is_transient(e) and module.startswith("redis"):
            return "Redis"
        if is_transient(e) and module.startswith("aiokafka"):
            return "Kafka"
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return None


class SupervisionPolicy(BaseModel):
    """Backoff and give-up bounds (from :class:`shared.settings.CommonSettings`)."""

    backoff_initial_s: float = Field(default=0.2, gt=0)
    backoff_max_s: float = Field(default=5.0, gt=0)
    settle_s: float = Field(default=2.0, ge=0)
    give_up_s: float = Field(default=60.0, gt=0)

    @classmethod
    def from_settings(cls, common: CommonSettings) -> SupervisionPolicy:
        return cls(
            backoff_initial_s=common.task_backoff_initial_ms / 1000,
            backoff_max_s=max(common.task_backoff_max_ms, common.task_backoff_initial_ms) / 1000,
            settle_s=common.task_settle_s,
            give_up_s=common.task_give_up_s,
        )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay before retry ``attempt`` (1, 2, ...): exponential, capped, with full jitter in its upper half."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
        return float(ceiling * (0.5 + 0.5 * rng.random()))


@dataclass
class TaskHealth:
    """The health of one supervised task (read by the health routes from any thread)."""

    name: str
    state: State = "starting"
    restarts: int = 0
    error: str = ""
    """The last error's type (never its text: it may carry personal data or internals)."""
    down_since: float | None = None
    """Monotonic time the task went down (None while it runs)."""
    reported: bool = field(default=False, repr=False)
    """Set while the task itself reported :meth:`degraded` (the supervisor then waits for its :meth:`ok`)."""
    give_up_s: float | None = None
    """This task's own give-up bound (None: the policy's ``give_up_s``), for a task that watches itself
    and gives up by :meth:`Supervisor.give_up` on its own terms."""

    @property
    def down(self) -> bool:
        return self.state in _DOWN

    def ok(self) -> None:
        """The task runs normally (again)."""
        if self.state != "running":
            if self.state == "retrying":
                log.info("task %s %s -> %s", self.name, self.state, "running", extra={"restarts": self.restarts})
            self.state = "running"
        self.down_since = None
        self.error = ""
        self.reported = False

    def degraded(self, exc: BaseException) -> None:
        """The task handles a failure itself and keeps trying: count it as down until :meth:`ok`."""
        self.error = type(exc).__name__
        self.reported = True
        if self.state != "retrying":
            self.state = "retrying"
            self.down_since = time.monotonic()

    def down_for(self, now: float) -> float:
        return 0.0 if self.down_since is None else now - self.down_since

    def view(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "restarts": self.restarts}
        if self.error:
            out["error"] = self.error
        if self.down_since is not None:
            out["down_s"] = round(now - self.down_since, 1)
        return out


class HealthRegistry:
    """Every supervised task's health plus the event loop's; one per service process."""

    def __init__(self, *, service: str, loop_stall_s: float = 10.0) -> None:
        self.service = service
        self.loop_stall_s = loop_stall_s
        self._tasks: dict[str, TaskHealth] = {}
        self._loop_beat: float | None = None
        self.started = wall_clock()

    def task(self, name: str) -> TaskHealth:
        """The health entry for ``name`` (created ``starting``)."""
        entry = self._tasks.get(name)
        if entry is None:
            entry = self._tasks[name] = TaskHealth(name=name)
        return entry

    def forget(self, name: str) -> None:
        self._tasks.pop(name, None)

    def tasks(self) -> dict[str, TaskHealth]:
        return dict(self._tasks)

    def beat(self) -> None:
        """The event loop ran (called every second by :meth:`Supervisor.watch_loop`)."""
        self._loop_beat = time.monotonic()

    def loop_stalled(self, now: float) -> bool:
        return self._loop_beat is not None and now - self._loop_beat > self.loop_stall_s

    def healthy(self) -> bool:
        """No task down (retrying or given up) and the event loop runs: what ``/healthz`` answers."""
        now = time.monotonic()
        return not self.loop_stalled(now) and not any(t.down for t in list(self._tasks.values()))

    def ready(self) -> bool:
        """Healthy and every task started (settled): what ``/readyz`` answers."""
        return self.healthy() and not any(t.state == "starting" for t in list(self._tasks.values()))

    def report(self, *, readiness: bool = False) -> dict[str, Any]:
        """``{"status": "ok"|"unhealthy"|"starting", "service": ..., "tasks": {name: {state, restarts, ...}}}``."""
        now = time.monotonic()
        tasks = {name: t.view(now) for name, t in sorted(list(self._tasks.items()))}
        status = "ok" if self.healthy() else "unhealthy"
        if readiness and status == "ok" and not self.ready():
            status = "starting"
        out: dict[str, Any] = {"status": status, "service": self.service}
        if self.loop_stalled(now):
            out["event_loop"] = "stalled"
        out["tasks"] = tasks
        return out


Factory = Callable[[], Awaitable[None]]


class Supervisor:
    """Runs tasks under retry/restart with bounded backoff; gives up (``on_fatal``) after ``give_up_s`` down."""

    def __init__(
        self,
        *,
        health: HealthRegistry,
        policy: SupervisionPolicy | None = None,
        on_fatal: Callable[[str], None] | None = None,
        count_restart: Callable[[str, bool], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.health = health
        self.policy = policy or SupervisionPolicy()
        self._on_fatal = on_fatal
        self._count_restart = count_restart
        self._rng = rng or random.Random()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.fatal: str | None = None

    def spawn(self, name: str, factory: Factory) -> asyncio.Task[None]:
        """Run ``factory()`` under supervision as task ``name``; cancel the returned task to stop it."""
        entry = self.health.task(name)
        entry.state, entry.down_since = "starting", time.monotonic()
        task = asyncio.create_task(self._supervise(name, factory, entry), name=name)
        self._tasks[name] = task
        return task

    def watch_loop(self) -> asyncio.Task[None]:
        """Beat the registry's event-loop heartbeat every second (a stalled loop reads unhealthy)."""

        async def beat() -> None:
            while True:
                self.health.beat()
                self._check_give_up()
                await asyncio.sleep(1.0)

        return asyncio.create_task(beat(), name=f"{self.health.service}-loop-watch")

    async def stop(self) -> None:
        """Cancel every supervised task and wait for them."""
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, name: str, factory: Factory, entry: TaskHealth) -> None:
        attempt = 0
        while True:
            entry.reported = False
            run = asyncio.ensure_future(factory())
            try:
                done, _ = await asyncio.wait({run}, timeout=self.policy.settle_s)
                if not done and not entry.reported:  # ran cleanly for settle_s
                    entry.ok()
                    attempt = 0
                await run
                entry.state, entry.down_since = "stopped", None
                return
            except asyncio.CancelledError:
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
                entry.state, entry.down_since = "stopped", None
                raise
            except Exception as exc:
                attempt += 1
                transient = is_transient(exc)
                entry.restarts += 1
                entry.error = type(exc).__name__
                if entry.down_since is None:
                    entry.down_since = time.monotonic()
                previous, entry.state = entry.state, "retrying"
                delay = self.policy.backoff(attempt, self._rng)
                fields = {"error": entry.error, "attempt": attempt, "retry_in_s": round(delay, 2)}
                if transient:
                    log.warning("task %s %s -> %s (broker unreachable)", name, previous, "retrying", extra=fields)
                else:
                    log.error("task %s %s -> %s (crashed)", name, previous, "retrying", extra=fields, exc_info=exc)
                if self._count_restart is not None:
                    self._count_restart(name, transient)
                if self._check_give_up():
                    entry.state = "failed"
                    return
                await asyncio.sleep(delay)

    def _check_give_up(self) -> bool:
        """Call ``on_fatal`` once when some task was down longer than ``give_up_s``; True then."""
        if self.fatal is not None:
            return True
        now = time.monotonic()
        for entry in self.health.tasks().values():
            limit = self.policy.give_up_s if entry.give_up_s is None else entry.give_up_s
            if entry.state == "retrying" and entry.down_for(now) > limit:
                entry.state = "failed"
                self.give_up(
                    f"task {entry.name} could not recover for {limit:g} s "
                    f"(last error: {entry.error or 'unknown'}); exiting so the orchestrator restarts the service"
                )
                return True
        return False

    def give_up(self, message: str) -> None:
        """End the service now with ``message`` as its one error line (exit status 3); the first call wins."""
        if self.fatal is not None:
            return
        self.fatal = message
        if self._on_fatal is not None:
            self._on_fatal(message)


async def retry_transient(
    op: Callable[[], Awaitable[Any]],
    *,
    policy: SupervisionPolicy,
    keep_going: Callable[[], bool] = lambda: True,
    on_error: Callable[[BaseException], None] | None = None,
    rng: random.Random | None = None,
) -> bool:
    """Run ``op`` until it succeeds (True) or ``keep_going()`` turns False (False); transient errors
    are retried with the policy's backoff, other errors propagate. For idempotent operations (an ack)."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            await op()
            return True
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            if on_error is not None:
                on_error(exc)
            if not keep_going():
                return False
            await asyncio.sleep(policy.backoff(attempt, rng))
