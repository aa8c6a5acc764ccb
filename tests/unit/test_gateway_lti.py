"""LTI 1.3 launch end to end against a platform emulator (its own keys, JWKS and OIDC endpoint):
instructors land on the dashboard with a teacher token, learners on the join page with a student token;
forged, expired, replayed, misaddressed and cross-browser launches are refused with one line."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from services.gateway.lti.claims import map_role
from services.gateway.lti.platforms import LtiConfigError, load_registry
from services.gateway.lti.settings import LtiSettings
from services.gateway.lti.tool import COOKIE, NonceLedger
from shared.tokens import verify_token

from .gateway_fixtures import SECRET, Harness, gateway
from .lti_platform import CLAIM, INSTRUCTOR, LEARNER, Platform, form_fields, fragment, platform

pytestmark = pytest.mark.unit


@dataclass
class Lms:
    platform: Platform
    tool: Harness


@asynccontextmanager
async def lms(tmp_path: Path, **registration: Any) -> AsyncIterator[Lms]:
    async with platform() as p:
        path = tmp_path / "platforms.json"
        path.write_text(json.dumps({"platforms": [p.registration(**registration)]}))
        async with gateway(lti=LtiSettings(platforms_file=path)) as h:
            yield Lms(platform=p, tool=h)


async def start_login(env: Lms, hint: str) -> tuple[str, dict[str, str]]:
    """The browser's first two hops: tool login initiation, then the platform's authorization page."""
    resp = await env.tool.client.get("/lti/login", params={
        "iss": env.platform.issuer, "login_hint": hint, "target_link_uri": "http://tool/lti/launch",
        "client_id": "classpulse-tool", "lti_message_hint": "opaque-42"}, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    async with aiohttp.ClientSession() as browser, browser.get(resp.headers["Location"]) as auth:
        assert auth.status == 200, await auth.text()
        action, fields = form_fields(await auth.text())
    assert action.endswith("/lti/launch")
    return action, fields


async def launch(env: Lms, hint: str) -> aiohttp.ClientResponse:
    _, fields = await start_login(env, hint)
    return await env.tool.client.post("/lti/launch", data=fields, allow_redirects=False)


async def test_instructor_lands_on_dashboard_with_a_teacher_token_that_views_the_session(tmp_path: Path) -> None:
    async with lms(tmp_path) as env:
        resp = await launch(env, "teacher-hint")
        assert resp.status == 303, await resp.text()
        location = resp.headers["Location"]
        assert "/dashboard#" in location and "?" not in location  # token only in the fragment
        got = fragment(location)
        claims = verify_token(got["token"], secret=SECRET)
        assert claims.role == "teacher" and claims.session == got["session"]
        assert got["session"].startswith("lti-")
        sent = env.platform.authorize_requests[-1]
        assert sent["lti_message_hint"] == "opaque-42" and sent["redirect_uri"].endswith("/lti/launch")
        live = await env.tool.client.get(f"/api/sessions/{got['session']}/live",
                                         headers={"Authorization": f"Bearer {got['token']}"})
        assert live.status == 200


async def test_learner_lands_on_join_page_with_own_pseudonymous_student_token(tmp_path: Path) -> None:
    async with lms(tmp_path) as env:
        resp = await launch(env, "student-hint")
        assert resp.status == 303, await resp.text()
        location = resp.headers["Location"]
        assert "/join#" in location
        got = fragment(location)
        claims = verify_token(got["token"], secret=SECRET)
        assert claims.role == "student" and claims.can_publish(got["session"], got["participant"])
        assert "student-sub-1" not in location and got["participant"].startswith("u-")
        teacher = fragment((await launch(env, "teacher-hint")).headers["Location"])
        assert teacher["session"] == got["session"]  # the course's one session


async def test_sessions_map_names_the_course_session(tmp_path: Path) -> None:
    async with lms(tmp_path, sessions={"course-42": "algebra-1"}) as env:
        got = fragment((await launch(env, "student-hint")).headers["Location"])
        assert got["session"] == "algebra-1"


@pytest.mark.parametrize(
    ("override", "status", "words"),
    [
        ({"aud": "another-tool"}, 401, "another tool"),
        ({"exp": 1_000_000}, 401, "expired"),
        ({CLAIM + "deployment_id": "rogue"}, 403, "not registered"),
        ({CLAIM + "message_type": "LtiDeepLinkingRequest"}, 400, "ResourceLinkRequest"),
        ({CLAIM + "version": "1.1"}, 400, "version"),
        ({CLAIM + "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Member"]}, 403, "neither"),
        ({"nonce": "not-the-one-sent"}, 401, "nonce"),
    ],
)
async def test_bad_id_tokens_are_refused_with_one_line(
    tmp_path: Path, override: dict[str, Any], status: int, words: str
) -> None:
    async with lms(tmp_path) as env:
        env.platform.overrides = override
        resp = await launch(env, "student-hint")
        body = await resp.text()
        assert resp.status == status, body
        assert words in body and body.count("\n") == 1 and "Traceback" not in body
        assert "Location" not in resp.headers


async def test_forged_signature_is_refused(tmp_path: Path) -> None:
    async with lms(tmp_path) as env:
        env.platform.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        resp = await launch(env, "teacher-hint")
        assert resp.status == 401
        assert "signature" in await resp.text()


async def test_replayed_launch_and_launch_from_another_browser_are_refused(tmp_path: Path) -> None:
    async with lms(tmp_path) as env:
        _, fields = await start_login(env, "student-hint")
        cookie = env.tool.client.session.cookie_jar.filter_cookies(env.tool.client.make_url("/lti/launch"))[COOKIE]
        async with aiohttp.ClientSession() as other_browser:  # no login cookie: a forged cross-site post
            url = env.tool.client.make_url("/lti/launch")
            async with other_browser.post(url, data=fields, allow_redirects=False) as resp:
                assert resp.status == 400 and "browser" in await resp.text()
        first = await env.tool.client.post("/lti/launch", data=fields, allow_redirects=False)
        assert first.status == 303
        env.tool.client.session.cookie_jar.update_cookies({COOKIE: cookie.value})  # an attacker replays it all
        again = await env.tool.client.post("/lti/launch", data=fields, allow_redirects=False)
        assert again.status == 401 and "already used" in await again.text()


async def test_login_from_unregistered_platform_and_unconfigured_tool(tmp_path: Path) -> None:
    async with lms(tmp_path) as env:
        resp = await env.tool.client.get("/lti/login", params={
            "iss": "https://evil.example", "login_hint": "x", "target_link_uri": "http://tool/"})
        assert resp.status == 400 and "not registered" in await resp.text()
        resp = await env.tool.client.post("/lti/launch", data={"state": "garbage", "id_token": "x.y.z"})
        assert resp.status == 400 and "not issued by this ClassPulse" in await resp.text()
    async with gateway() as h:
        resp = await h.client.get("/lti/login")
        assert resp.status == 404 and "CLASSPULSE_LTI_PLATFORMS_FILE" in await resp.text()


def test_platforms_file_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text('{"platforms": [{"issuer": "x"}]}')
    with pytest.raises(LtiConfigError, match="client_id"):
        load_registry(bad)
    bad.write_text("{nope")
    with pytest.raises(LtiConfigError, match="not JSON"):
        load_registry(bad)
    with pytest.raises(LtiConfigError, match="cannot read"):
        load_registry(tmp_path / "missing.json")


def test_role_mapping_follows_the_lti_vocabularies() -> None:
    assert map_role([INSTRUCTOR]) == "teacher"
    assert map_role(["http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"]) == "teacher"
    assert map_role([LEARNER, "http://purl.imsglobal.org/vocab/lis/v2/institution/person#Instructor"]) == "student"
    assert map_role(["http://purl.imsglobal.org/vocab/lis/v2/institution/person#Student"]) == "student"
    assert map_role(["Instructor"]) == "teacher"
    assert map_role(["http://purl.imsglobal.org/vocab/lis/v2/system/person#User"]) is None


def test_nonce_ledger_refuses_reuse_and_forgets_expired() -> None:
    ledger = NonceLedger(max_items=3)
    assert ledger.use("a", until=10, now=0) and not ledger.use("a", until=10, now=1)
    assert ledger.use("b", until=20, now=11)  # "a" expired and was forgotten
    assert ledger.use("a", until=30, now=12)
