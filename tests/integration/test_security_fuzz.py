"""A bounded fuzz run against a real ``classpulse up`` (its WebRTC in 2 ingest processes): what an attacker sends.

2,400 generated requests across WHIP, REST, WebSocket/SSE upgrades, interactions and pages, plus raw
requests aiohttp's parser rejects: no answer is >= 500, none carries internal exception text or is
more than one line, the server stays up and ready with bounded memory, every malformed request is
counted in ``classpulse_malformed_requests_total``, the log holds no traceback and, with
``CLASSPULSE_LOG_REDACT_PII=true``, no access log line holds a token or a participant id.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.testkit.fuzz import fuzz_requests, raw_requests, seed_session, send_all, send_raw
from tests.integration.classpulse_up import SECRET, classpulse_up

pytestmark = pytest.mark.integration
REQUESTS = 2_400
MEMORY_GROWTH_LIMIT_MB = 150.0
_PARTICIPANT_IN_WHIP = re.compile(r"/whip/[^/ ]+/(?!\{participant\})[^/ ]+")


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (the ingest processes), in MB."""
    out = subprocess.run(["ps", "-o", "rss=", "--pid", str(pid), "--ppid", str(pid)], capture_output=True, text=True)
    return sum(int(x) for x in out.stdout.split()) / 1024


async def _ready(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            async with http.get(f"{url}/readyz") as resp:
                if resp.status == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError("classpulse up never became ready")


def _malformed(text: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "classpulse_malformed_requests_total"
    )


async def test_fuzzed_requests_get_readable_4xx_and_the_server_stays_up_with_flat_memory(tmp_path: Path) -> None:
    env = {
        "CLASSPULSE_UP_INGEST_PROCESSES": "2",
        "CLASSPULSE_LOG_LEVEL": "INFO",  # access log lines are written (and checked below)
        "CLASSPULSE_LOG_REDACT_PII": "true",
        # the limits have their own tests; here every request should reach its handler
        "CLASSPULSE_GATEWAY_RATE_PER_ADDRESS": "0",
        "CLASSPULSE_GATEWAY_RATE_PER_TOKEN": "0",
        "CLASSPULSE_INGEST_WHIP_RATE_PER_ADDRESS": "0",
        "CLASSPULSE_INGEST_WHIP_RATE_PER_TOKEN": "0",
    }
    requests = list(fuzz_requests(REQUESTS, secret=SECRET, seed=16))
    with classpulse_up(tmp_path, env=env) as up:
        await _ready(up.url)  # /readyz answers 503 while a task starts: a probe's answer, not a failure
        await seed_session(up.url, secret=SECRET)
        warm = await send_all(up.url, requests[:300])  # warm every route once before measuring memory
        before = _rss_mb(up.proc.pid)
        report = await send_all(up.url, requests[300:])
        host, port = up.url.removeprefix("http://").split(":")
        raw = await send_raw(host, int(port), raw_requests() * 5)
        after = _rss_mb(up.proc.pid)
        assert up.proc.poll() is None, "classpulse up died under fuzzing"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{up.url}/readyz") as ready:
                assert ready.status == 200, await ready.text()
            async with http.get(f"{up.url}/metrics") as resp:
                metrics = await resp.text()
    sent = warm.sent + report.sent
    assert sent >= 2_000 and raw.sent == 5 * len(raw_requests())
    kinds = warm.by_kind + report.by_kind
    assert min(kinds[k] for k in ("whip", "rest", "live", "page")) >= 300, kinds
    statuses = warm.statuses + report.statuses + raw.statuses
    assert not [s for s in statuses if s >= 500], (statuses, warm.server_errors[:5], report.server_errors[:5])
    for r in (warm, report, raw):
        assert not r.problems(), r.problems()
    transport_errors = sum((warm.transport_errors + report.transport_errors).values())
    assert transport_errors <= sent // 100, warm.transport_errors + report.transport_errors
    assert sum(n for s, n in statuses.items() if 400 <= s < 500) >= sent // 2  # the fuzz hit real checks
    assert _malformed(metrics) >= raw.sent + statuses[400]
    assert after - before < MEMORY_GROWTH_LIMIT_MB, f"memory grew {after - before:.0f} MB ({before:.0f} -> {after:.0f})"

    log = up.log.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 300 :][:3000]
    access = [line for line in log.splitlines() if "aiohttp.access" in line]
    assert len(access) >= 1_000  # the ingest processes' and up's own access logs
    for line in access:
        assert "eyJ" not in line and "token" not in line, line
        assert not _PARTICIPANT_IN_WHIP.search(line), line
    # malformed requests are counted, their log lines bounded (one per reason and minute at most)
    assert len([line for line in log.splitlines() if "malformed request" in line]) < 60
