"""Serve an aiohttp app inside :func:`shared.service.run_service`, printing the bound URL.

Used by every service with an HTTP front (gateway, ingest, ``classpulse up``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from shared.service import ServiceContext, ServiceError


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log lines without query strings: browser feeds carry their token in ``?token=``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1f ms", request.method, request.path, response.status, time * 1000)


async def serve_app(
    app: web.Application, *, host: str, port: int, banner: Callable[[str], str], service: ServiceContext
) -> None:
    """Run ``app`` on ``host:port`` until SIGINT/SIGTERM; prints ``banner(base_url)`` once listening
    (the real port when asked for 0); cleans up on exit. A busy port raises :class:`ServiceError`."""
    stop = asyncio.Event()
    service.on_stop(stop.set)  # before start-up (model loading), so a stop then counts too
    runner = web.AppRunner(app, access_log_class=PathOnlyAccessLogger, handle_signals=False)
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
