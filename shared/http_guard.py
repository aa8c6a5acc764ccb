"""Every HTTP front's guard against malformed requests: one readable line back, a counter, bounded logs.

* :func:`add_request_guard` (a middleware): an ``HTTPException`` whose text is not one line (aiohttp's
  own WebSocket handshake errors, for one) is answered with one line for its status; any other
  exception is answered ``500`` with one line (no exception text) and logged with its traceback at
  most once per reason and :data:`LOG_EVERY_S`. Malformed requests are counted in
  ``classpulse_malformed_requests_total{service, reason}``.
* :class:`GuardedAppRunner`: the same for what never reaches a handler, aiohttp's own HTTP parser
  errors (a bad request line, an over-long header ...): ``400`` with one line that does not echo
  the input, counted, logged without traceback and bounded.
* :func:`access_logger`: access log lines without query strings or tokens and, with
  ``CLASSPULSE_LOG_REDACT_PII``, without participant ids (route templates instead of their values).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from shared.log import get_logger
from shared.metrics import Metrics
from shared.ratelimit import forwarded_internally

_log = get_logger(__name__)
LOG_EVERY_S = 60.0
"""At most one log line per reason in this many seconds (the rest are counted, and reported with the next)."""
_MALFORMED_STATUSES = frozenset({400, 405, 411, 413, 414, 415, 422, 431})
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*")
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")
_PII_PARAMS = frozenset({"participant", "resource"})
_HINTS = {
    400: "the request is malformed; check its path, query values and body against docs/live-api.md",
    404: "no such path; see /api/openapi.json",
    405: "this method is not allowed on this path; see /api/openapi.json",
    413: "the request body is too large",
    414: "the request line is too long",
    415: "unsupported Content-Type; see /api/openapi.json",
    431: "the request headers are too large",
    500: "the server failed to answer this request",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BoundedLog:
    """Log at most one line per reason every ``every_s`` seconds; lines say how many were left out."""

    def __init__(self, *, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def allow(self, reason: str) -> int | None:
        """None: stay silent; else log now, and the number of lines left out since the last one."""
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.every_s:
            self._skipped[reason] = self._skipped.get(reason, 0) + 1
            return None
        if len(self._last) > 1_000:  # reasons are a small fixed set; never let odd ones grow it
            self._last.clear()
        self._last[reason] = now
        return self._skipped.pop(reason, 0)


def _snake(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "unknown"


def _status_reason(status: int) -> str:
    try:
        return _snake(HTTPStatus(status).phrase)
    except ValueError:
        return f"http_{status}"


def one_line(status: int) -> str:
    """The readable line answered for ``status`` when the handler's own text was not fit to show."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    hint = _HINTS.get(status, "see /api/openapi.json")
    return f"{status} {phrase}: {hint}"


class RequestGuard:
    """What the middleware and the runner share: the service name, the counter, the bounded log."""

    def __init__(self, *, service: str, metrics: Metrics, log: BoundedLog | None = None) -> None:
        self.service = service
        self.metrics = metrics
        self.log = log or BoundedLog()

    def malformed(self, reason: str) -> None:
        self.metrics.malformed_requests_total.labels(self.service, reason).inc()
        skipped = self.log.allow(reason)
        if skipped is not None:
            _log.warning("malformed request -> 4xx (%s)", reason, extra={"service": self.service, "left_out": skipped})

    def internal(self, where: str, exc: BaseException) -> None:
        reason = f"{where}:{type(exc).__name__}"
        self.metrics.malformed_requests_total.labels(self.service, "internal").inc()
        skipped = self.log.allow(reason)
        if skipped is not None:
            _log.error(
                "request handler %s -> failed (%s)", where, type(exc).__name__,
                extra={"service": self.service, "left_out": skipped}, exc_info=exc,
            )


GUARD: web.AppKey[RequestGuard] = web.AppKey("classpulse_request_guard", RequestGuard)


def _fit_to_show(text: str | None) -> bool:
    return bool(text) and "\n" not in (text or "").strip() and len(text or "") <= 500


def add_request_guard(app: web.Application, *, service: str, metrics: Metrics) -> RequestGuard:
    """Install the guard middleware on ``app`` (first, so it sees every other middleware's failures)."""
    guard = RequestGuard(service=service, metrics=metrics)
    app[GUARD] = guard

    @web.middleware
    async def request_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status in _MALFORMED_STATUSES:
                guard.malformed(_status_reason(exc.status))
            if exc.status < 400 or _fit_to_show(exc.text):
                raise
            return web.Response(status=exc.status, text=one_line(exc.status) + "\n", headers=_kept_headers(exc))
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:
            guard.internal(_route_name(request), exc)
            return web.Response(status=500, text=one_line(500) + "; it was logged, retry or report it\n")
        if response.status in _MALFORMED_STATUSES and not forwarded_internally(request):  # counted where it came in
            guard.malformed(_status_reason(response.status))
        return response

    app.middlewares.insert(0, request_guard)
    return guard


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after", "www-authenticate")}


def _match(request: web.BaseRequest) -> web.UrlMappingMatchInfo | None:
    """The routing result, or None for a request that never reached the router (a parser error)."""
    try:
        match = request.match_info if isinstance(request, web.Request) else None
    except AssertionError:
        return None
    if not isinstance(match, web.UrlMappingMatchInfo):
        return None
    resource = match.route.resource
    return match if resource is not None and isinstance(resource.canonical, str) else None


def _route_name(request: web.BaseRequest) -> str:
    match = _match(request)
    resource = match.route.resource if match is not None else None
    return resource.canonical if resource is not None else "unmatched"


# -- aiohttp's own parser errors -----------------------------------------------------------------


class _GuardedRequestHandler(RequestHandler):
    """Answers parser errors and unexpected failures with one line (never the input, never a traceback)."""

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        guard: RequestGuard | None = getattr(self._manager, "classpulse_guard", None)
        if guard is not None and exc is not None:
            if status == 500:
                guard.internal("server", exc)
            else:
                guard.malformed(_snake(_parser_reason(exc)))
        if request.writer.output_size > 0:
            raise ConnectionError("response already sent, cannot send another one with the error")
        text = one_line(status)
        if status == 400 and exc is not None:
            text = f"400 Bad Request: malformed HTTP request ({_parser_reason(exc)}); send a valid HTTP/1.1 request"
        head = getattr(request, "method", "") == "HEAD"  # a HEAD answer has no body, even an error's
        resp = web.Response(status=status, text="" if head else text + "\n", content_type="text/plain")
        resp.force_close()
        return resp


def _parser_reason(exc: BaseException) -> str:
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", type(exc).__name__).lower()
    return words.replace("http ", "").strip() or "bad request"


class _GuardedServer(Server):
    classpulse_guard: RequestGuard | None = None

    def __call__(self) -> RequestHandler:
        return _GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An ``AppRunner`` whose connections answer HTTP parser errors with one line (counted, bounded logs)."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer  # same state, one more method: the handler class it makes
        guard = self.app.get(GUARD)
        server.classpulse_guard = guard  # type: ignore[attr-defined]
        return server


# -- access logs -----------------------------------------------------------------------------------


def loggable_path(request: web.BaseRequest, *, redact_pii: bool) -> str:
    """The path for an access log line: no query string, no token and, with ``redact_pii``, no participant id.

    A routed request is written as its route template with the values filled in (``{participant}`` and
    ``{resource}`` left as they are when redacting); any other path is cut at 80 characters, and with
    ``redact_pii`` only its first segment is kept.
    """
    match = _match(request)
    resource = match.route.resource if match is not None else None
    if resource is not None and resource.canonical.startswith("/") and match is not None:
        path = resource.canonical
        for name, value in match.items():
            shown = "{" + name + "}" if redact_pii and name in _PII_PARAMS else _clean(value.replace("/", "%2F"), 64)
            path = path.replace("{" + name + "}", shown)
        return path
    raw = request.path.split("?", 1)[0]
    if redact_pii:
        first = raw.lstrip("/").split("/", 1)[0]
        return "/" + _clean(first, 40) + ("/…" if "/" in raw.lstrip("/") else "")
    return _clean(raw, 80)


def _clean(text: str, limit: int) -> str:
    text = _JWT.sub("<token>", text)
    text = _UNPRINTABLE.sub("?", text)
    return text if len(text) <= limit else text[:limit] + "…"


def access_logger(*, redact_pii: bool) -> type[AbstractAccessLogger]:
    """An access logger class (aiohttp instantiates it) writing method, safe path, status and time."""

    class SafeAccessLogger(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            path = loggable_path(request, redact_pii=redact_pii)
            self.logger.info("%s %s %s %.1f ms", _clean(request.method, 16), path, response.status, time * 1000)

    return SafeAccessLogger
