"""Serve an aiohttp app inside :func:`shared.service.run_service`, printing the bound URL.

Used by every service with an HTTP front (gateway, ingest, ``classpulse up``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from shared.http_guard import GuardedAppRunner, access_logger
from shared.service import ServiceContext, ServiceError


def app_runner(app: web.Application, *, redact_pii: bool) -> web.AppRunner:
    """The runner every HTTP front uses: access log lines without query strings, tokens and
    (``redact_pii``) participant ids; aiohttp's parser errors answered with one line
    (:class:`shared.http_guard.GuardedAppRunner`)."""
    return GuardedAppRunner(app, access_log_class=access_logger(redact_pii=redact_pii), handle_signals=False)


async def serve_app(
    app: web.Application, *, host: str, port: int, banner: Callable[[str], str], service: ServiceContext
) -> None:
    """Run ``app`` on ``host:port`` until SIGINT/SIGTERM; prints ``banner(base_url)`` once listening
    (the real port when asked for 0); cleans up on exit. A busy port raises :class:`ServiceError`."""
    stop = asyncio.Event()
    service.on_stop(stop.set)  # before start-up (model loading), so a stop then counts too
    runner = app_runner(app, redact_pii=service.common.log_redact_pii)
    await runner.setup()
    try:
        if stop.is_set():
            return
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ServiceError(f"cannot serve on {host}:{port} ({exc.strerror}); choose another --port") from exc
        bound = runner.addresses[0][1]
        print(banner(f"http://{host}:{bound}"), flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
