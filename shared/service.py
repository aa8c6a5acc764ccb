"""One boot path for every ClassPulse service: :func:`run_service`.

A service's entry point (its ``cli.py``) turns its command-line flags into a settings factory
and hands it, with the service's main coroutine, to :func:`run_service`, which does the rest
in this order::

    check every CLASSPULSE_* variable -> build settings -> logging -> torch threads
        -> /metrics (+ /healthz, /readyz) -> SIGINT/SIGTERM handlers -> main(settings, context) -> clean stop

Errors a user can fix print one ``error: ...`` line: bad settings exit 2, a
:class:`ServiceError` exits with its code. Nothing here runs at import time.

Every service gets a :class:`~shared.supervise.HealthRegistry` and a
:class:`~shared.supervise.Supervisor` on its context: long-lived tasks run under
``context.supervisor.spawn(name, factory)``. When one cannot recover within
``CLASSPULSE_TASK_GIVE_UP_S``, the main coroutine is cancelled (clean stop) and the process
exits with :data:`~shared.supervise.EXIT_UNRECOVERABLE` and one ``error: task ... could not
recover ...`` line, so the orchestrator restarts it.

A stop is bounded (:class:`StopBound`): ``CLASSPULSE_STOP_TIMEOUT_S`` after the first SIGINT/SIGTERM the
process has exited, with status 0, even when a close never returns (one warning line says so); a task giving
up stops within the same bound (status 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.log import get_logger, setup_logging
from shared.metrics import Metrics, default_metrics
from shared.settings import CommonSettings, SettingsError, check_environment, settings_error_line
from shared.supervise import EXIT_UNRECOVERABLE, HealthRegistry, SupervisionPolicy, Supervisor
from shared.torch_threads import set_torch_threads

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

S = TypeVar("S")
EXIT_BAD_SETTINGS = 2
EXIT_UNREACHABLE = 3
"""A broker was unreachable at start-up (the same status as a task that could not recover: restart me)."""
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_log = get_logger(__name__)


class ServiceError(Exception):
    """A failure the user can act on: printed as one ``error: <message>`` line; exit status ``code``."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True)
class MetricsServer:
    """Where to serve Prometheus ``/metrics`` (port 0: any free port)."""

    port: int
    host: str = "127.0.0.1"


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """Process-wide set-up a service asks of the boot path, decided from its settings."""

    torch_threads: int = 0  # 0: leave torch's default
    metrics: MetricsServer | None = None  # None: no /metrics server


class ServiceContext:
    """What a service's main coroutine gets besides its own settings."""

    def __init__(self, *, name: str, common: CommonSettings, metrics: Metrics) -> None:
        self.name = name
        self.common = common
        self.metrics = metrics
        self.health = HealthRegistry(service=name)
        self.supervisor = Supervisor(
            health=self.health,
            policy=SupervisionPolicy.from_settings(common),
            on_fatal=self._fatal,
            count_restart=lambda task, transient: metrics.task_restarts_total.labels(
                task, "transient" if transient else "crash"
            ).inc(),
        )
        self._stop_callbacks: list[Callable[[], None]] = []
        self._fatal_callbacks: list[Callable[[], None]] = []
        self.stop_bound = StopBound(name, common.stop_timeout_s)

    def _fatal(self, message: str) -> None:
        """A task gave up: stop the main coroutine (``run_service`` then prints the one error line, exit 3)."""
        for callback in self._fatal_callbacks:
            callback()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Stop gracefully: the first SIGINT/SIGTERM calls ``callback`` (and every other one
        registered) instead of cancelling the main coroutine; a second signal cancels it."""
        self._stop_callbacks.append(callback)


Main = Callable[[S, ServiceContext], Coroutine[Any, Any, int | None]]


def run_service(
    name: str,
    *,
    settings: Callable[[CommonSettings], S],
    main: Main[S],
    runtime: Callable[[S], Runtime] | None = None,
    check_config: bool = False,
    listens_on: Callable[[S], str] | None = None,
) -> int:
    """Boot service ``name``, run ``main`` until it returns or a signal stops it; returns the exit status.

    ``settings(common)`` builds the service's settings (flags applied) after every
    ``CLASSPULSE_*`` variable was checked against all registered settings classes, so one env
    file serves every service while a typo still fails; it may raise :class:`ServiceError` for
    bad flags. ``check_config``: print those settings and return 0 instead of running.
    ``runtime(settings)`` says which torch thread count and ``/metrics`` server to set up.
    ``main`` returns the exit status (None: 0); a service stopped by a signal exits 0.
    ``listens_on(settings)``: the address a service that checks tokens binds; beyond loopback it refuses
    to start with the development (or an empty or short) token secret, on loopback it warns.
    """
    try:
        check_environment()
        common = CommonSettings()
        loaded = settings(common)
    except SettingsError as exc:
        return _fail(str(exc), EXIT_BAD_SETTINGS)
    except ValidationError as exc:
        return _fail(settings_error_line(exc), EXIT_BAD_SETTINGS)
    except ServiceError as exc:
        return _fail(str(exc), exc.code)
    if check_config:
        print(loaded.model_dump_json(indent=2) if isinstance(loaded, BaseModel) else loaded)
        return 0
    if listens_on is not None:
        from shared.security import check_token_secret

        try:
            warning = check_token_secret(common, host=listens_on(loaded), service=name)
        except ValueError as exc:
            return _fail(str(exc), EXIT_BAD_SETTINGS)
        if warning:
            print(warning, file=sys.stderr, flush=True)
    setup_logging(level=common.log_level, json_lines=common.log_json, redact_pii=common.log_redact_pii)
    plan = runtime(loaded) if runtime is not None else Runtime()
    set_torch_threads(plan.torch_threads)
    context = ServiceContext(name=name, common=common, metrics=default_metrics())
    try:
        server = serve_metrics(plan.metrics, context)
        try:
            return asyncio.run(_run(main, loaded, context)) or 0
        except Exception as exc:  # a broker down at start-up: one line, not a traceback
            line = _unreachable_line(exc, common)
            if line is None:
                raise
            return _fail(line, EXIT_UNREACHABLE)
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
            context.stop_bound.settle()
    except ServiceError as exc:
        return _fail(str(exc), exc.code)


def _unreachable_line(exc: BaseException, common: CommonSettings) -> str | None:
    from shared.supervise import broker_unreachable

    broker = broker_unreachable(exc)
    if broker == "Redis":
        where, variable = redacted_url(common.redis_url.get_secret_value()), "CLASSPULSE_REDIS_URL"
    elif broker == "Kafka":
        where, variable = common.kafka_bootstrap, "CLASSPULSE_KAFKA_BOOTSTRAP"
    else:
        return None
    return (
        f"cannot reach {broker} at {where}; start it (for a local try: deploy/local/services.sh start) "
        f"or point {variable} at it"
    )


def redacted_url(url: str) -> str:
    """``url`` without its password (``redis://:secret@host`` -> ``redis://host``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def serve_metrics(where: MetricsServer | None, context: ServiceContext) -> WSGIServer | None:
    """``/metrics`` plus ``/healthz`` and ``/readyz`` on one small threaded HTTP server."""
    if where is None:
        return None
    import threading
    from wsgiref.simple_server import make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

    from shared.health_http import health_wsgi

    app = health_wsgi(context.health, make_wsgi_app(context.metrics.registry))
    try:
        server = make_server(where.host, where.port, app, ThreadingWSGIServer, handler_class=_SilentHandler)
    except OSError as exc:
        raise ServiceError(
            f"cannot serve /metrics on {where.host}:{where.port} ({exc.strerror}); choose another metrics port"
        ) from exc
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    _log.info("metrics server %s -> %s", "off", "listening", extra={"host": where.host, "port": server.server_port})
    return server


STOP_FORCED = "stop timed out"
"""Marker of the warning line a stop that ran past ``CLASSPULSE_STOP_TIMEOUT_S`` logs (tests look for it)."""


class StopBound:
    """A stop signal ends the process within ``timeout_s`` (``CLASSPULSE_STOP_TIMEOUT_S``).

    :meth:`arm` (on the first SIGINT/SIGTERM): the main coroutine is cancelled a little before the bound if
    it still runs, and at the bound a timer thread exits the process with status 0 whatever still runs (a
    close that never returns, a stuck library thread, a loop that does not come back). :meth:`settle`
    (after the event loop ended): non-daemon threads the service started get the rest of the time to end,
    then the timer is called off (so an in-process caller lives on)."""

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._deadline: float | None = None
        self._timer: threading.Timer | None = None
        self._exit: tuple[int, str] = (0, "")
        self._before = set(threading.enumerate())
        """Threads from before the service (an in-process caller's own): never waited for."""

    def arm(self, task: asyncio.Task[Any], *, status: int = 0, error: str = "") -> None:
        """Start the bound; at it the process exits with ``status`` (after ``error: <error>`` if given)."""
        if self._deadline is not None:
            return
        grace = min(3.0, self.timeout_s / 3)
        self._deadline = time.monotonic() + self.timeout_s

        def cancel() -> None:
            if not task.done():
                _log.warning("service %s %s -> %s (%s after %g s, CLASSPULSE_STOP_TIMEOUT_S=%g)", self.name,
                             "stopping", "cancelled", STOP_FORCED, self.timeout_s - grace, self.timeout_s)
                task.cancel()

        asyncio.get_running_loop().call_later(self.timeout_s - grace, cancel)
        self._exit = (status, error)
        self._timer = threading.Timer(self.timeout_s, self._leave, args=self._exit)
        self._timer.daemon = True
        self._timer.start()

    def settle(self) -> None:
        if self._deadline is None or self._timer is None:
            return
        for thread in threading.enumerate():
            if thread not in self._before and not thread.daemon and thread.is_alive():
                thread.join(max(0.0, self._deadline - time.monotonic()))
                if thread.is_alive():
                    self._leave(*self._exit)
        self._timer.cancel()

    def _leave(self, status: int, error: str) -> None:
        _log.warning("service %s %s -> %s (%s, CLASSPULSE_STOP_TIMEOUT_S=%g)", self.name, "stopping", "exited",
                     STOP_FORCED, self.timeout_s)
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        with contextlib.suppress(Exception):
            if error:
                print(f"error: {error}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


async def _run(main: Main[S], settings: S, context: ServiceContext) -> int | None:
    """Run ``main`` as a task; SIGINT/SIGTERM stop it (callbacks first, cancellation after)."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(main(settings, context), name=f"{context.name}-main")
    received: list[str] = []

    def on_fatal() -> None:  # a task gave up: stop, within the same bound as a signal's stop
        context.stop_bound.arm(task, status=EXIT_UNRECOVERABLE, error=context.supervisor.fatal or "")
        task.cancel()

    context._fatal_callbacks.append(on_fatal)
    watch = context.supervisor.watch_loop()

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        _log.info("service %s %s -> %s", context.name, "running", "stopping", extra={"signal": sig.name})
        if len(received) == 1:
            context.stop_bound.arm(task)
        if len(received) == 1 and context._stop_callbacks:
            for callback in context._stop_callbacks:
                callback()
        else:
            task.cancel()

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        status = await task
    except asyncio.CancelledError:
        if context.supervisor.fatal is not None:
            raise ServiceError(context.supervisor.fatal, code=EXIT_UNRECOVERABLE) from None
        if not received:
            raise
        return 0
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        watch.cancel()
        await context.supervisor.stop()
    if context.supervisor.fatal is not None:
        raise ServiceError(context.supervisor.fatal, code=EXIT_UNRECOVERABLE)
    return status
