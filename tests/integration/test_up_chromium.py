"""Chromium publishes a fake camera made from a real photo through the join page of a real
``classpulse up`` while a second page shows the teacher dashboard: the student's tile
appears and shows present, and a question the student posts shows in its chat/question
counts. A screenshot of the dashboard is saved under ``artifacts/``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from shared.tokens import issue_token

from .classpulse_up import REPO, SECRET, classpulse_up

pytestmark = pytest.mark.integration

SESSION = "chromium-class"
STUDENT = "alice"
ARTIFACTS = REPO / "artifacts"
PRESENT_WITHIN_S = 15  # "within a few seconds", with room for a loaded 2-core CI machine


def _camera_y4m(folder: Path) -> Path:
    """A 640x480 y4m clip of the astronaut photo (scikit-image) on a plain background."""
    from skimage import data

    photo = data.astronaut()  # 512x512 RGB, a real photo of a face
    canvas = np.full((480, 640, 3), 90, dtype=np.uint8)
    face = photo[:384:, 64:448:]  # head and shoulders, 384x384
    canvas[48:432, 128:512] = face
    png = folder / "camera.png"
    import matplotlib.image

    matplotlib.image.imsave(png, canvas)
    out = folder / "camera.y4m"
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-loop",
            "1",
            "-i",
            str(png),
            "-t",
            "2",
            "-r",
            "10",
            "-pix_fmt",
            "yuv420p",
            str(out),
        ],
        check=True,
    )
    return out


def test_student_tile_appears_present_on_the_dashboard(tmp_path: Path) -> None:
    y4m = _camera_y4m(tmp_path)
    student = issue_token(secret=SECRET, session=SESSION, participant=STUDENT, role="student")
    teacher = issue_token(secret=SECRET, session=SESSION, participant="teacher-1", role="teacher")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard-chromium.png"
    with classpulse_up(tmp_path) as up, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--allow-loopback-in-peer-connection",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={y4m}",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            dash = browser.new_page(viewport={"width": 1280, "height": 900})
            dash.goto(f"{up.url}/dashboard?session={SESSION}#token={teacher}")
            dash.wait_for_selector("#feed-status.live", timeout=15_000)

            join = browser.new_page()
            join.goto(f"{up.url}/join?session={SESSION}&participant={STUDENT}#token={student}")
            join.click("#start")
            join.wait_for_selector('#state[data-state="connected"]', timeout=20_000)
            connected = time.monotonic()

            tile = f'.tile[data-participant="{STUDENT}"]'
            dash.wait_for_selector(f'{tile}[data-present="true"]', timeout=PRESENT_WITHIN_S * 1000)
            print(f"tile present {time.monotonic() - connected:.1f} s after the publisher connected")
            # The student asks in chat (REST, its own token): the tile counts it, from the live feed.
            ask = urllib.request.Request(
                f"{up.url}/api/sessions/{SESSION}/interactions",
                data=json.dumps([{"event_id": "q1", "participant": STUDENT, "kind": "chat", "ts": time.time(),
                                  "text": "can you repeat that"}]).encode(),
                headers={"Authorization": f"Bearer {student}", "Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(ask, timeout=10) as answer:
                assert answer.status == 202
            dash.wait_for_selector(f'{tile} .text-activity[data-questions="1"][data-chat-messages="1"]', timeout=10_000)
            dash.wait_for_timeout(2_500)  # let the latency panel and class timeline fill in
            dash.screenshot(path=str(shot), full_page=True)

            assert dash.locator(tile).count() == 1
            badges = dash.locator(f"{tile} .badge").all_inner_texts()
            assert "present" in badges
            engagement = float(dash.locator(f"{tile} .engagement").get_attribute("data-value") or "nan")
            assert 0.0 <= engagement <= 1.0
            assert dash.locator(f"{tile} .explain li").count() >= 1  # the explanation of the score
            p50 = dash.locator("#lat-p50").inner_text()
            assert p50.isdigit() and 0 < int(p50) < 5_000, p50
            assert int(dash.locator("#lat-n").inner_text()) > 0
            assert dash.locator("#feed-status").inner_text() == "live"

            # The student's own view (/me, its own token): its signals, explanation and question, nobody else's.
            me = browser.new_page(viewport={"width": 1100, "height": 900})
            my_link = join.get_attribute("#my-view", "href") or ""  # the join page links to it
            assert my_link.startswith(f"/me#session={SESSION}&participant={STUDENT}&token="), my_link
            me.goto(up.url + my_link)
            me.wait_for_selector("#status.live", timeout=10_000)
            me.wait_for_selector("#badges .badge.on", timeout=10_000)
            assert "present" in me.locator("#badges .badge.on").all_inner_texts()
            assert me.locator("#explain li").count() >= 1
            assert me.locator("#summary th").count() >= 6
            me.wait_for_selector("#questions li:not(.muted)", timeout=10_000)
            assert "never stores your camera" in me.locator("#recorded").inner_text()
            assert me.locator("#opt-out").inner_text() == "Opt out of analysis"  # the privacy switch
            me.screenshot(path=str(ARTIFACTS / "me-chromium.png"), full_page=True)
            me.close()

            # The student leaves: the tile says so (lifecycle from ingest via the event log).
            join.click("#stop")
            dash.wait_for_selector(f'{tile} .badge:text-is("left")', timeout=15_000)

            # The feed drops (server gone): the dashboard says so and keeps retrying.
            up.proc.send_signal(signal.SIGINT)
            up.proc.wait(timeout=20)
            dash.wait_for_selector("#feed-status.down", timeout=15_000)
            assert "feed disconnected — reconnecting" in dash.locator("#feed-status").inner_text()
            assert "disconnected" in (dash.locator("body").get_attribute("class") or "")
            dash.screenshot(path=str(ARTIFACTS / "dashboard-disconnected.png"))
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
