"""Serve an aiohttp app until SIGINT/SIGTERM, printing the bound URL (the real port when asked for 0)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log lines without query strings: browser feeds carry their token in ``?token=``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1f ms", request.method, request.path, response.status, time * 1000)


async def serve(app: web.Application, *, host: str, port: int, banner: Callable[[str], str]) -> None:
    """Run ``app`` on ``host:port``; prints ``banner(base_url)`` once listening; cleans up on exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before start-up (model loading), so a stop then counts too
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log_class=PathOnlyAccessLogger)
    await runner.setup()
    try:
        if stop.is_set():
            return
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        print(banner(f"http://{host}:{bound}"), flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
