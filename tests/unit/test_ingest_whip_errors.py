"""WHIP request validation: every error status with a readable message, and the server keeps serving.

These requests never reach ICE (they fail before), so the in-process aiohttp test server
and in-memory transports suffice; real aiortc peers are in the integration tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from services.ingest.app import create_ingest_app
from services.ingest.sdp import SdpError, validate_offer
from services.ingest.settings import IngestSettings
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.tokens import issue_token
from shared.transport.factory import build_transports

pytestmark = pytest.mark.unit

SECRET = "unit-test-secret"

OFFER = """v=0
o=- 4611 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 0.0.0.0
a=mid:0
a=sendonly
a=ice-ufrag:abcd
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=setup:actpass
a=rtpmap:96 VP8/90000
a=rtpmap:97 H264/90000
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=mid:1
a=sendonly
a=ice-ufrag:abcd
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=setup:actpass
a=rtpmap:111 opus/48000/2
"""


def test_validate_offer_accepts_vp8_h264_opus() -> None:
    summary = validate_offer(OFFER.replace("\n", "\r\n"))
    assert summary.has_video and summary.has_audio
    assert summary.video_codecs == ("VP8", "H264") and summary.audio_codecs == ("OPUS",)


@pytest.mark.parametrize(
    ("offer", "expect"),
    [
        ("", "empty"),
        ("v=0", "lacks its 'o='"),
        ("hello world", "must start with 'v=0'"),
        ("v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nt=0 0\n", "no media"),
        (OFFER.replace("a=sendonly", "a=recvonly"), "sends no audio or video"),
        (OFFER.replace("VP8/90000", "AV1/90000").replace("H264/90000", "VP9/90000"), "offer VP8 or H.264"),
        (OFFER.replace("opus/48000/2", "PCMU/8000"), "offer Opus"),
        (OFFER.replace("a=fingerprint", "a=fingerpint"), "fingerprint"),
        (OFFER.replace("a=ice-pwd:abcdefghijklmnopqrstuvwx\n", ""), "ICE credentials"),
        (OFFER.replace("m=audio 9 UDP", "m=audio UDP"), "malformed SDP media line"),
        (OFFER + "garbage line\n", "malformed SDP line"),
    ],
)
def test_validate_offer_rejects_with_readable_reason(offer: str, expect: str) -> None:
    with pytest.raises(SdpError, match=expect):
        validate_offer(offer)


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    common = CommonSettings(token_secret=SECRET)  # type: ignore[arg-type]
    metrics = Metrics(CollectorRegistry())
    settings = IngestSettings(max_sdp_bytes=4096)
    app = create_ingest_app(
        settings=settings, common=common, transports=build_transports(common, metrics=metrics), metrics=metrics
    )
    async with TestClient(TestServer(app)) as c:
        yield c


# tokens are signed at collection time, which can be many minutes before the test runs: a long ttl
def _auth(session: str = "s1", participant: str = "p1", role: str = "student", ttl: float = 6 * 3600) -> dict[str, str]:
    token = issue_token(secret=SECRET, session=session, participant=participant, role=role, ttl_s=ttl)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}


async def _post(
    client: TestClient, body: str | bytes, headers: dict[str, str], path: str = "/whip/s1/p1"  # type: ignore[type-arg]
) -> tuple[int, str]:
    resp = await client.post(path, data=body, headers=headers)
    return resp.status, await resp.text()


@pytest.mark.parametrize(
    ("headers", "body", "status", "expect"),
    [
        ({"Content-Type": "application/sdp"}, OFFER, 401, "missing Authorization"),
        ({"Content-Type": "application/sdp", "Authorization": "Basic abc"}, OFFER, 401, "Bearer"),
        ({"Content-Type": "application/sdp", "Authorization": "Bearer nope.nope"}, OFFER, 401, "token"),
        (_auth(ttl=-10), OFFER, 401, "expired"),
        (_auth(session="other"), OFFER, 403, "another session"),
        (_auth(participant="p2"), OFFER, 403, "another session or participant"),
        (_auth(role="viewer", participant="*"), OFFER, 403, "viewer token cannot publish"),
        ({**_auth(), "Content-Type": "application/json"}, OFFER, 415, "application/sdp"),
        (_auth(), "v=0\r\n", 400, "lacks its 'o='"),
        (_auth(), "not sdp", 400, "must start with 'v=0'"),
        (_auth(), OFFER.replace("a=sendonly", "a=inactive"), 400, "sends no audio or video"),
        (_auth(), OFFER + "a=x:" + "y" * 5000 + "\n", 413, "larger than 4096 bytes"),
        (_auth(), b"v=0\n\xff\xfe", 400, "UTF-8"),
    ],
)
async def test_whip_post_errors(
    client: TestClient, headers: dict[str, str], body: str | bytes, status: int, expect: str  # type: ignore[type-arg]
) -> None:
    got, text = await _post(client, body, headers)
    assert got == status, text
    assert expect in text and "Traceback" not in text
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["publishers"] == 0


async def test_whip_bad_ids_delete_unknown_patch_and_options(client: TestClient) -> None:  # type: ignore[type-arg]
    status, text = await _post(client, OFFER, _auth(), path="/whip/s1/bad%20id")
    assert status == 400 and "participant id" in text
    resp = await client.delete("/whip/s1/p1/deadbeef", headers=_auth())
    assert resp.status == 404 and "no such WHIP session" in await resp.text()
    resp = await client.delete("/whip/s1/p1/deadbeef")
    assert resp.status == 401
    resp = await client.patch("/whip/s1/p1/deadbeef", headers=_auth())
    assert resp.status == 405 and "trickle" in await resp.text()
    resp = await client.options("/whip/s1/p1", headers={"Origin": "http://example.test"})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    assert "Location" in resp.headers["Access-Control-Expose-Headers"]
    assert resp.headers["Accept-Post"] == "application/sdp"


async def test_join_page_and_metrics_are_served_without_remote_assets(client: TestClient) -> None:  # type: ignore[type-arg]
    page = await client.get("/join")
    html = await page.text()
    assert page.status == 200 and "/join/join.js" in html
    script = await (await client.get("/join/join.js")).text()
    assert "application/sdp" in script
    for text in (html, script):
        assert "http://" not in text and "https://" not in text  # no CDN, no remote assets
    metrics = await client.get("/metrics")
    assert metrics.status == 200 and "classpulse_media_dropped_total" in await metrics.text()
