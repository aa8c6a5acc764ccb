"""Grafana dashboards against a real Prometheus scraping a real ``classpulse up``.

Two simulated students publish over WHIP (the webcam-like clip: a real photo that speaks with espeak-ng,
so the transcribe panels get segments), a teacher posts a question and students answer in chat,
and a viewer watches the live feed; the Debian
Prometheus scrapes ``/metrics`` every second; then every expression of every panel of
both provisioned dashboards must return at least one series, and ``promtool check
metrics`` must accept the exposition.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.testkit.clips import write_webcam_clip
from shared.tokens import issue_token

from .classpulse_up import REPO, SECRET, classpulse, classpulse_up, free_port, up_env

pytestmark = pytest.mark.integration

DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
SESSION = "grafana-check"


def _expressions() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        for panel in doc["panels"]:
            for target in panel["targets"]:
                out.append((path.name, panel["title"], target["expr"]))
    return out


def _concrete(expr: str) -> str:
    return expr.replace("$__rate_interval", "20s").replace("$session", ".*")


def test_dashboards_are_provisioned_with_the_datasource() -> None:
    text = (PROVISIONING / "datasources" / "prometheus.yml").read_text()
    uid = re.search(r"^\s*uid:\s*(\S+)\s*$", text, re.M)
    assert uid is not None, "the provisioned datasource has no uid"
    titles = set()
    for path in DASHBOARDS.glob("*.json"):
        doc = json.loads(path.read_text())
        titles.add(doc["title"])
        for panel in doc["panels"]:
            assert panel["datasource"]["uid"] == uid.group(1), (path.name, panel["title"])
            assert panel["targets"], panel["title"]
    assert titles == {"ClassPulse — Pipeline health", "ClassPulse — Class analytics"}


async def _chat(http: aiohttp.ClientSession, url: str) -> None:
    """A teacher's question and two student messages mid-class (the text panels need them)."""
    await asyncio.sleep(5.0)
    teacher = issue_token(secret=SECRET, session=SESSION, participant="*", role="teacher")
    now = time.time()
    batch = [
        {"event_id": "g-q1", "participant": "ms-lee", "role": "teacher", "kind": "chat", "ts": now,
         "text": "who can tell me how to find a common denominator?"},
        {"event_id": "g-a1", "participant": "student-1", "kind": "answer", "ts": now + 1.5,
         "text": "you multiply the two denominators"},
        {"event_id": "g-q2", "participant": "student-2", "kind": "chat", "ts": now + 2.0,
         "text": "is this going to be on the test"},
    ]
    async with http.post(f"{url}/api/sessions/{SESSION}/interactions", json=batch,
                         headers={"Authorization": f"Bearer {teacher}"}) as r:
        assert r.status == 202, await r.text()


async def _watch(url: str, seconds: float) -> int:
    token = issue_token(secret=SECRET, session=SESSION, participant="*", role="viewer")
    received = 0
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{url}/api/sessions/{SESSION}/ws", params={"token": token}) as ws,
    ):
        chat = asyncio.create_task(_chat(http, url))
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                await ws.receive(timeout=left)
                received += 1
            except TimeoutError:
                break
        await chat
    return received


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    import urllib.parse
    import urllib.request

    with urllib.request.urlopen(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_every_panel_expression_returns_a_series(tmp_path: Path) -> None:
    with classpulse_up(tmp_path) as up:
        port = free_port()
        hostport = up.url.removeprefix("http://")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [{"job_name": "classpulse", "static_configs": [{"targets": [hostport]}]}],
                }
            )
        )
        prom_log = (tmp_path / "prometheus.log").open("w")
        prom = subprocess.Popen(
            [
                "/usr/bin/prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=prom_log,
            stderr=subprocess.STDOUT,
        )
        clip = tmp_path / "webcam.webm"
        write_webcam_clip(clip, seconds=15.0)
        sim = subprocess.Popen(
            classpulse("simulate", "--session", SESSION, "--students", "2", "--url", up.url, "--duration", "15",
                       "--media", str(clip)),
            cwd=REPO,
            env=up_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            received = asyncio.run(_watch(up.url, 17.0))
            sim_out, _ = sim.communicate(timeout=30)
            assert sim.returncode == 0, sim_out
            assert received > 20, "the live feed delivered almost nothing"
            base = f"http://127.0.0.1:{port}"
            missing = []
            for name, title, expr in _expressions():
                if not _query(base, _concrete(expr)):
                    missing.append(f"{name} / {title}: {expr}")
            assert not missing, "panel expressions without data:\n" + "\n".join(missing)

            import urllib.request

            with urllib.request.urlopen(f"{up.url}/metrics", timeout=10) as r:
                exposition = r.read()
            check = subprocess.run(["/usr/bin/promtool", "check", "metrics"], input=exposition, capture_output=True)
            assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
        finally:
            if sim.poll() is None:
                sim.kill()
            prom.terminate()
            prom.wait(timeout=20)
            prom_log.close()
