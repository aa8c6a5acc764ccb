"""Access logs keep tokens out: browser feeds send them as ``?token=``."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from shared.serving import PathOnlyAccessLogger

pytestmark = pytest.mark.unit


def test_access_log_has_method_path_status_but_no_query(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.access")
    access = PathOnlyAccessLogger(logger, "")
    request = make_mocked_request("GET", "/api/sessions/s1/ws?token=SECRET.TOKEN")
    with caplog.at_level(logging.INFO, logger="test.access"):
        access.log(request, web.Response(status=401), 0.0123)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == "GET /api/sessions/s1/ws 401 12.3 ms"
    assert "SECRET" not in line
