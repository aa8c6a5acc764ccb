"""Access logs keep tokens out (browser feeds send them as ``?token=``) and, with redaction on, participant ids."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from shared.http_guard import access_logger, loggable_path

pytestmark = pytest.mark.unit
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzaWQiOiJzMSJ9.c2lnbmF0dXJl"


def _line(path: str, *, redact: bool, caplog: pytest.LogCaptureFixture) -> str:
    logger = logging.getLogger("test.access")
    access = access_logger(redact_pii=redact)(logger, "")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="test.access"):
        access.log(make_mocked_request("GET", path), web.Response(status=401), 0.0123)
    (line,) = [r.getMessage() for r in caplog.records]
    return line


def test_access_log_has_method_path_status_but_no_query(caplog: pytest.LogCaptureFixture) -> None:
    line = _line(f"/api/sessions/s1/ws?token={TOKEN}", redact=False, caplog=caplog)
    assert line == "GET /api/sessions/s1/ws 401 12.3 ms"
    # a token pasted into the path itself (a %3F instead of '?') is replaced too
    line = _line(f"/join%3Fsession%3Ds1%26token%3D{TOKEN}", redact=False, caplog=caplog)
    assert "eyJ" not in line and "token" not in line


async def test_routed_paths_are_logged_as_templates_without_participants_when_redacting() -> None:
    app = web.Application()

    async def ok(_: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/whip/{session}/{participant}", ok)
    app.router.add_delete("/whip/{session}/{participant}/{resource}", ok)
    for method, path, redacted, plain in [
        ("POST", "/whip/class-7/alice", "/whip/class-7/{participant}", "/whip/class-7/alice"),
        ("DELETE", "/whip/class-7/alice/w0-1234", "/whip/class-7/{participant}/{resource}",
         "/whip/class-7/alice/w0-1234"),
    ]:
        request = make_mocked_request(method, path, app=app)
        match = await app.router.resolve(request)
        request._match_info = match
        assert loggable_path(request, redact_pii=True) == redacted
        assert loggable_path(request, redact_pii=False) == plain
    unrouted = make_mocked_request("GET", "/whip/class-7/alice/extra/bits")
    assert loggable_path(unrouted, redact_pii=True) == "/whip/…"
