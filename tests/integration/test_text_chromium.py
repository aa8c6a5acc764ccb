"""The text modality in real Chromium against a real ``classpulse up``: a student chats and asks from the
join page (its own token, ``source: join_page``), the teacher's dashboard counts it on the tile and lists
the question in its queue, the live rows and the report carry the figures (on-topic relevance from the
real all-MiniLM-L6-v2 model against the lesson topic and the teacher's question), and no message text
reaches the logs even at DEBUG. Screenshots of both pages go to ``artifacts/``.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

from shared.tokens import issue_token

from .classpulse_up import REPO, SECRET, classpulse_up
from .test_up_chromium import _camera_y4m

pytestmark = pytest.mark.integration

SESSION = "text-class"
STUDENT = "alice"
ARTIFACTS = REPO / "artifacts"
TOPIC = "adding fractions with unlike denominators: finding a common denominator"
TEACHER_ASKS = "who can tell me how we find a common denominator?"
ON_TOPIC_QUESTION = "do we multiply the two denominators together"
OFF_TOPIC_CHAT = "my cat just walked over the keyboard lol"


def _call(url: str, token: str, *, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as r:
        return r.status, json.loads(r.read())


def _send(join: Page, text: str, *, question: bool) -> None:
    join.fill("#chat-text", text)
    if question:
        join.check("#chat-question")
    join.click("#chat-send")
    join.wait_for_selector(f'#chat-log li[data-state="sent"]:text-is("{text}")', timeout=15_000)


def test_join_page_chat_reaches_the_dashboard_live_rows_and_report(tmp_path: Path) -> None:
    y4m = _camera_y4m(tmp_path)
    student = issue_token(secret=SECRET, session=SESSION, participant=STUDENT, role="student")
    teacher = issue_token(secret=SECRET, session=SESSION, participant="ms-lee", role="teacher")
    ARTIFACTS.mkdir(exist_ok=True)
    with classpulse_up(tmp_path, env={"CLASSPULSE_LOG_LEVEL": "DEBUG"}) as up, sync_playwright() as pw:
        api = f"{up.url}/api/sessions/{SESSION}"
        assert _call(f"{api}/topic", teacher, method="PUT", body={"topic": TOPIC}) == (
            200, {"session": SESSION, "relevance": True})
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--allow-loopback-in-peer-connection",
                  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                  f"--use-file-for-fake-video-capture={y4m}", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            dash = browser.new_page(viewport={"width": 1280, "height": 1000})
            dash.goto(f"{up.url}/dashboard?session={SESSION}#token={teacher}")
            dash.wait_for_selector("#feed-status.live", timeout=15_000)
            join = browser.new_page(viewport={"width": 900, "height": 1100})
            join.goto(f"{up.url}/join?session={SESSION}&participant={STUDENT}#token={student}")
            join.click("#start")
            join.wait_for_selector('#state[data-state="connected"]', timeout=20_000)
            tile = f'.tile[data-participant="{STUDENT}"]'
            dash.wait_for_selector(f'{tile}[data-present="true"]', timeout=15_000)

            asked_at = time.time()
            status, _ = _call(f"{api}/interactions", teacher, method="POST", body=[
                {"event_id": "t-q1", "participant": "ms-lee", "role": "teacher", "kind": "chat", "ts": asked_at,
                 "text": TEACHER_ASKS}])
            assert status == 202
            _send(join, ON_TOPIC_QUESTION, question=True)
            _send(join, OFF_TOPIC_CHAT, question=False)

            dash.wait_for_selector(f'{tile} .text-activity[data-questions="1"][data-chat-messages="2"]',
                                   timeout=10_000)
            queue = dash.locator("#questions li.question")
            queue.first.wait_for(timeout=10_000)
            assert queue.count() == 1  # the student's question (the teacher's own is not queued)
            assert "alice" in queue.first.inner_text() and "text not kept" in queue.first.inner_text()
            dash.wait_for_timeout(2_000)
            dash.screenshot(path=str(ARTIFACTS / "dashboard-text-chromium.png"), full_page=True)
            join.screenshot(path=str(ARTIFACTS / "join-chat-chromium.png"), full_page=True)

            # a bad token on the join page: one readable line, nothing sent
            join.fill("#token", student[:-4] + "AAAA")
            join.fill("#chat-text", "hello?")
            join.click("#chat-send")
            join.wait_for_selector('#chat-state[data-state="error"]', timeout=10_000)
            assert "Not sent" in join.locator("#chat-state").inner_text()

            _, live = _call(f"{api}/live", teacher)
            row = next(p for p in live["participants"] if p["participant"] == STUDENT)
            assert (row["questions"], row["chat_messages"], row["words_spoken"]) == (1, 2, 0)
            assert row["on_topic_ratio"] == 0.5, row  # the question is on topic, the cat is not
            assert [q["participant"] for q in live["questions"]] == ["ms-lee", STUDENT]

            _, report = _call(f"{api}/report", teacher)
            summary = report["summary"]
            alice = summary["participants"][STUDENT]
            assert (alice["questions"], alice["chat_messages"], alice["on_topic_ratio"]) == (1, 2, 0.5)
            assert (summary["questions_students"], summary["questions_teacher"]) == (1, 1)
            assert summary["teacher_questions_answered"] == 1
            assert 0.0 <= summary["response_latency_s"] < 30.0
            first = report["questions"][0]
            assert first["role"] == "teacher" and first["answered"] and first["responder"] == STUDENT
            assert all(q["text"] is None for q in report["questions"])  # CLASSPULSE_KEEP_TEXT is off
            join.click("#stop")
        finally:
            browser.close()
    log = up.log.read_text()
    assert "DEBUG" in log or "debug" in log.lower()  # the test looked at a verbose log
    for text in (TOPIC, TEACHER_ASKS, ON_TOPIC_QUESTION, OFF_TOPIC_CHAT, "common denominator", "keyboard"):
        assert text not in log, f"message text in the log: {text!r}"
