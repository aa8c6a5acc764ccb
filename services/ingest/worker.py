"""One ingest worker of ``classpulse ingest --workers N``: shared public port, private owner port.

Every worker binds the public port with ``SO_REUSEPORT`` (the kernel spreads new
connections over the workers) and a private loopback port, registered in the runtime
directory the supervisor created (``worker-<i>.json``: pid and private port). Resource ids
start with ``w<i>-``, so a WHIP Location names its owner; a request on a resource that
lands on another worker is proxied to the owner's private port. A participant who publishes
again on one worker has their older resources on the other workers ended (the same
"publishing again replaces" rule as one process).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from services.ingest.app import WHIP_SERVICE, create_ingest_app
from services.ingest.settings import IngestSettings
from services.ingest.whip import WhipError
from shared.log import get_logger, spawn
from shared.metrics import Metrics
from shared.service import ServiceContext, ServiceError
from shared.serving import app_runner
from shared.settings import CommonSettings
from shared.supervise import HealthRegistry
from shared.transport.factory import Transports

log = get_logger(__name__)

_OWNER = re.compile(r"^w(\d{1,4})-")
_FORWARDED = "X-ClassPulse-Forwarded"
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive", "date", "server", "host"}
_PROXY_TIMEOUT = aiohttp.ClientTimeout(total=20.0)
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("classpulse_ingest_proxy", aiohttp.ClientSession)


@dataclass(frozen=True)
class WorkerIdentity:
    """Which worker this process is and where the workers' registry lives."""

    index: int
    runtime_dir: Path

    @property
    def prefix(self) -> str:
        return f"w{self.index}-"

    def registry_file(self, index: int) -> Path:
        return self.runtime_dir / f"worker-{index}.json"

    def register(self, *, private_port: int) -> None:
        """Publish pid and private port atomically (a restarted worker overwrites its entry)."""
        path = self.registry_file(self.index)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"pid": os.getpid(), "port": private_port}))
        os.replace(tmp, path)

    def private_port_of(self, index: int) -> int | None:
        try:
            return int(json.loads(self.registry_file(index).read_text())["port"])
        except (OSError, ValueError, KeyError):
            return None


def owner_of(resource: str | None) -> int | None:
    """The worker index encoded in a resource id, or None when it carries none."""
    match = _OWNER.match(resource or "")
    return int(match.group(1)) if match else None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def forward_request(request: web.Request, *, client: aiohttp.ClientSession, port: int, via: str) -> web.Response:
    """Send ``request`` to the ingest worker on loopback ``port`` and return its answer.

    Raises ``aiohttp.ClientError`` / ``TimeoutError`` when the worker cannot be reached. Also
    used by ``classpulse up``, whose WebRTC runs in ingest worker processes.
    """
    url = f"http://127.0.0.1:{port}{request.path_qs}"
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    headers[_FORWARDED] = via
    async with client.request(request.method, url, data=await request.read(), headers=headers) as resp:
        body = await resp.read()
        out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP}
        return web.Response(status=resp.status, body=body, headers=out)


def route_to_owner(identity: WorkerIdentity) -> Middleware:
    """Middleware: requests on another worker's resource are proxied to that worker."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        owner = owner_of(request.match_info.get("resource"))
        if owner is None or owner == identity.index:
            response = await handler(request)
            if request.method == "POST" and response.status == 201 and "resource" not in request.match_info:
                session, participant = request.match_info["session"], request.match_info["participant"]
                created = request.app[WHIP_SERVICE].resources.get(response.headers["Location"].rsplit("/", 1)[-1])
                epoch = created.publish.epoch if created is not None else 0
                spawn(_replace_elsewhere(request.app, identity, session, participant, epoch), name="ingest-replace")
            return response
        service = request.app[WHIP_SERVICE]
        port = identity.private_port_of(owner)
        if port is None or request.headers.get(_FORWARDED):
            return service.error(WhipError(404, "no such WHIP session (its worker is gone); publish again with POST"))
        try:
            return await forward_request(request, client=request.app[HTTP], port=port, via=str(identity.index))
        except (aiohttp.ClientError, TimeoutError):
            log.warning("ingest proxy -> owner unreachable (worker %d)", owner)
            return service.error(WhipError(404, "no such WHIP session (its worker restarted); publish again with POST"))

    return middleware


async def _replace_elsewhere(
    app: web.Application, identity: WorkerIdentity, session: str, participant: str, epoch: int
) -> None:
    """A participant published here (publish ``epoch``): end their older publishes on the other workers.

    Only older epochs: when two workers race for one participant, the newer publish survives on
    both sides instead of each ending the other's.
    """
    for entry in identity.runtime_dir.glob("worker-*.json"):
        index = int(entry.stem.removeprefix("worker-"))
        port = identity.private_port_of(index)
        if index == identity.index or port is None:
            continue
        url = f"http://127.0.0.1:{port}/ingest/replace/{session}/{participant}?before_epoch={epoch}"
        try:
            async with app[HTTP].post(url) as resp:
                await resp.release()
        except (aiohttp.ClientError, TimeoutError):
            log.warning("ingest replace -> worker %d unreachable", index)


def _on_private_port(request: web.Request, identity: WorkerIdentity) -> bool:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname is not None and sockname[1] == identity.private_port_of(identity.index)


def create_worker_app(
    *,
    identity: WorkerIdentity,
    settings: IngestSettings,
    common: CommonSettings,
    transports: Transports,
    metrics: Metrics,
    health: HealthRegistry | None = None,
) -> web.Application:
    """The standalone ingest app plus owner routing and ``/ingest/worker``."""
    app = create_ingest_app(
        settings=settings, common=common, transports=transports, metrics=metrics, resource_prefix=identity.prefix,
        health=health,
    )
    app.middlewares.append(route_to_owner(identity))

    async def proxy_client(app: web.Application) -> AsyncIterator[None]:
        app[HTTP] = aiohttp.ClientSession(timeout=_PROXY_TIMEOUT)
        yield
        await app[HTTP].close()

    async def worker_info(request: web.Request) -> web.Response:
        port = identity.private_port_of(identity.index)
        return web.json_response({"worker": identity.index, "pid": os.getpid(), "private_port": port})

    async def replace(request: web.Request) -> web.Response:
        if not _on_private_port(request, identity):  # workers only: never from the public port
            raise web.HTTPNotFound()
        try:
            before = int(request.query.get("before_epoch", ""))
        except ValueError:
            before = None  # an older worker build: replace every resource, as before
        await request.app[WHIP_SERVICE].close_participant(
            request.match_info["session"], request.match_info["participant"], before_epoch=before
        )
        return web.Response(status=204)

    app.cleanup_ctx.append(proxy_client)
    app.router.add_get("/ingest/worker", worker_info)
    app.router.add_post("/ingest/replace/{session}/{participant}", replace)
    return app


async def serve_worker(
    *, app: web.Application, identity: WorkerIdentity, host: str, port: int, service: ServiceContext
) -> None:
    """Serve on the shared public port and a private loopback port until SIGTERM/SIGINT or parent exit."""
    stop = asyncio.Event()
    service.on_stop(stop.set)
    runner = app_runner(app, redact_pii=service.common.log_redact_pii)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port, reuse_port=True).start()
        except OSError as exc:
            raise ServiceError(f"ingest worker cannot serve on {host}:{port} ({exc.strerror})") from exc
        private = web.TCPSite(runner, "127.0.0.1", 0)
        await private.start()
        private_port = private._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        identity.register(private_port=private_port)
        log.info("ingest worker %d -> serving", identity.index)
        watchdog = spawn(_watch_parent(stop), name=f"ingest-worker-{identity.index}-watchdog")
        await stop.wait()
        watchdog.cancel()
    finally:
        log.info("ingest worker %d -> stopping", identity.index)
        await runner.cleanup()


async def _watch_parent(stop: asyncio.Event) -> None:
    """Stop when the supervisor is gone (its children must not outlive it)."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            break
    log.warning("ingest worker -> parent gone, stopping")
    stop.set()
