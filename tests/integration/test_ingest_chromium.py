"""Headless Debian Chromium publishes through the join page (fake camera from a real photo)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright.async_api import Browser, async_playwright
from prometheus_client import CollectorRegistry

from services.ingest.app import WHIP_SERVICE, create_ingest_app
from services.ingest.sampling import FrameSampler
from services.ingest.settings import IngestSettings
from services.ingest.whip import WhipService
from shared.contracts.codec import decode_media
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.contracts.topics import LIFECYCLE
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.testkit.frames import cover, pan
from shared.testkit.photos import grace_hopper
from shared.testkit.web import served as serving
from shared.tokens import issue_token
from shared.transport.base import MediaBus
from shared.transport.factory import Transports
from shared.transport.memory import MemoryEventBus, MemoryLiveBus, MemoryMediaBus

pytestmark = pytest.mark.integration

SECRET = "chromium-secret"
CHROMIUM = "/usr/bin/chromium"


def write_y4m(path: Path, *, frames: int = 30, width: int = 640, height: int = 480, fps: int = 15) -> Path:
    """A short y4m clip of a real photo, panning (Chromium loops it as its fake camera)."""
    base = cover(grace_hopper(), width, height)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            yuv = cv2.cvtColor(pan(base, i, fps, width, height), cv2.COLOR_BGR2YUV_I420)
            out.write(b"FRAME\n" + np.ascontiguousarray(yuv).tobytes())
    return path


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, WhipService, Transports, MemoryEventBus]]:
    common = CommonSettings(token_secret=SECRET)  # type: ignore[arg-type]
    metrics = Metrics(CollectorRegistry())
    events = MemoryEventBus()
    transports = Transports(media=MemoryMediaBus(maxlen=512), events=events, live=MemoryLiveBus())
    app = create_ingest_app(settings=IngestSettings(), common=common, transports=transports, metrics=metrics)
    async with serving(app) as base:
        yield base, app[WHIP_SERVICE], transports, events


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    camera = write_y4m(tmp_path / "camera.y4m")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--allow-loopback-in-peer-connection",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={camera}",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def _collect(bus: MediaBus, seconds: float) -> list[MediaMessage]:
    await bus.ensure_group("test")
    out: list[MediaMessage] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        entries = await bus.read_group("test", "c", shards=range(bus.shards), count=100, block_ms=100)
        out += [decode_media(e.data) for e in entries]
        await bus.ack("test", [e.id for e in entries])
    return out


async def test_chromium_publishes_through_the_join_page(
    served: tuple[str, WhipService, Transports, MemoryEventBus], browser: Browser
) -> None:
    url, service, transports, events = served
    token = issue_token(secret=SECRET, session="bio", participant="carol", role="student")
    page = await browser.new_page()
    await page.goto(f"{url}/join?session=bio&participant=carol#token={token}")
    await page.click("#start")
    await page.wait_for_selector('#state[data-state="connected"]', timeout=20_000)
    (resource,) = service.resources.values()
    sampler = resource.samplers["video"]
    assert isinstance(sampler, FrameSampler)
    seen_before = sampler.frames_seen
    msgs = await _collect(transports.media, 3.0)
    sent_fps = (sampler.frames_seen - seen_before) / 3.0
    # the fake camera runs at 15 fps; the join page caps what is sent at the analysed rate (5 fps)
    assert 2.5 <= sent_fps <= 6.5, f"the browser sent {sent_fps:.1f} fps, expected about 5 (the analysed rate)"
    video = [m for m in msgs if isinstance(m, VideoFrame)]
    audio = [m for m in msgs if isinstance(m, AudioChunk)]
    assert len(video) >= 8, f"expected ~15 frames at 5 fps, got {len(video)}"
    assert all(m.session == "bio" and m.participant == "carol" for m in msgs)
    assert video[-1].width == 640 and video[-1].image().std() > 10  # the photo, not a black frame
    assert len(audio) >= 3 and audio[0].sample_rate == 16_000
    for m in video:
        stamp = m.timing.stage("ingest")
        assert stamp is not None and 0.0 <= stamp.emitted - m.timing.capture_ts < 1.0

    await page.click("#stop")
    kinds: list[str] = []
    for _ in range(50):
        kinds = [LIFECYCLE.model.model_validate_json(v).kind for _, v in events.records(LIFECYCLE.name)]
        if not service.resources and kinds[-1:] == ["left"]:
            break
        await asyncio.sleep(0.1)
    assert service.resources == {}
    assert kinds[0] == "joined" and kinds[-1] == "left", kinds


async def test_join_config_says_what_the_browser_should_send(
    served: tuple[str, WhipService, Transports, MemoryEventBus],
) -> None:
    import aiohttp

    url, _, _, _ = served
    async with aiohttp.ClientSession() as http, http.get(f"{url}/join/config.json") as r:
        assert r.status == 200
        assert await r.json() == {"camera_fps": 5.0, "camera_kbps": 400}


async def test_join_page_shows_the_server_error(
    served: tuple[str, WhipService, Transports, MemoryEventBus], browser: Browser
) -> None:
    url, service, _, _ = served
    token = issue_token(secret=SECRET, session="other", participant="carol", role="student")
    page = await browser.new_page()
    await page.goto(f"{url}/join?session=bio&participant=carol#token={token}")
    await page.click("#start")
    await page.wait_for_selector('#state[data-state="error"]', timeout=20_000)
    text = await page.text_content("#state")
    assert text is not None and "403" in text and "another session" in text
    assert service.resources == {}
