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
"""

from __future__ import annotations

import asyncio
import signal
import sys
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
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
    except ServiceError as exc:
        return _fail(str(exc), exc.code)


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


def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()


async def _run(main: Main[S], settings: S, context: ServiceContext) -> int | None:
    """Run ``main`` as a task; SIGINT/SIGTERM stop it (callbacks first, cancellation after)."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(main(settings, context), name=f"{context.name}-main")
    received: list[str] = []
    context._fatal_callbacks.append(lambda: _cancel(task))
    watch = context.supervisor.watch_loop()

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        _log.info("service %s %s -> %s", context.name, "running", "stopping", extra={"signal": sig.name})
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
