"""The OpenAPI document lists exactly the app's routes, and real responses match its schemas."""

from __future__ import annotations

import asyncio
from typing import Any

import jsonschema
import pytest
from aiohttp import web

from services.gateway.openapi import build_openapi

from .gateway_fixtures import aggregate, alert, gateway, score, token

pytestmark = pytest.mark.unit


def _app_paths(app: web.Application) -> set[str]:
    out = set()
    for resource in app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        if path and not path.startswith("/static/"):
            out.add(str(path))
    return out


def _validator(doc: dict[str, Any], path: str) -> jsonschema.Draft202012Validator:
    schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    full = {**schema, "components": doc["components"]}
    return jsonschema.Draft202012Validator(full)


async def test_document_matches_routes_and_responses() -> None:
    async with gateway() as h:
        doc = await (await h.client.get("/api/openapi.json")).json()
        assert doc == build_openapi()
        assert set(doc["paths"]) == _app_paths(h.client.app)  # type: ignore[arg-type]
        for path, ops in doc["paths"].items():
            if path.startswith("/api/sessions/"):
                assert {"401", "403"} <= set(ops["get"]["responses"]), path

        await h.emit(score("s1", "alice", 1))
        await h.emit(aggregate("s1", 0.0, hand_queue=["alice"]))
        await h.emit(alert("s1", "alice"))
        auth = {"Authorization": f"Bearer {token('s1', 'viewer')}"}
        checked = 0
        for path, ops in doc["paths"].items():
            content = ops["get"]["responses"]["200"].get("content", {}) if "200" in ops["get"]["responses"] else {}
            if "application/json" not in content or "schema" not in content["application/json"]:
                continue
            url = path.replace("{session}", "s1")
            for _ in range(100):
                resp = await h.client.get(url, headers=auth)
                if resp.status != 404:
                    break
                await asyncio.sleep(0.02)
            assert resp.status == 200, path
            _validator(doc, path).validate(await resp.json())
            checked += 1
        assert checked >= 8
        bad = await h.client.get("/api/sessions/s1/live")
        jsonschema.Draft202012Validator(
            {"$ref": "#/components/schemas/ErrorBody", "components": doc["components"]}
        ).validate(await bad.json())
