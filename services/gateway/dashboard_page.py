"""``GET /dashboard``: the teacher page, with the signal registry rendered into it.

The page's script builds its signal badges from the registry (``shared/signals.py``), read
from the ``<script id="signal-registry" type="application/json">`` element, so a signal
added to the registry reaches the dashboard without a second list in JavaScript.
"""

from __future__ import annotations

import json
from importlib import resources

from aiohttp import web

from shared.signals import registry_document

PLACEHOLDER = "SIGNAL_REGISTRY"
"""Stands in dashboard.html for the registry's JSON."""


def registry_json() -> str:
    """The registry as JSON that is safe inside a ``<script>`` element (no ``</``)."""
    return json.dumps(registry_document(), ensure_ascii=False).replace("<", "\\u003c")


def render_dashboard() -> str:
    page = resources.files("services.gateway").joinpath("static", "dashboard.html").read_text(encoding="utf-8")
    return page.replace(PLACEHOLDER, registry_json(), 1)


async def dashboard_page(request: web.Request) -> web.StreamResponse:
    return web.Response(text=render_dashboard(), content_type="text/html", headers={"Cache-Control": "no-cache"})
