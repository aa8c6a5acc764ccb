"""Generated HTTP requests against a ClassPulse server: what an attacker's fuzzer sends.

:func:`fuzz_requests` yields seeded, reproducible :class:`FuzzRequest` s over every public route
(WHIP, REST, WebSocket/SSE upgrades, interactions, topic, pages) with broken ids, query values
(``nan``, ``1e400`` ...), tokens (garbage, expired, other session or role, oversized), headers and
bodies; :func:`raw_requests` gives byte strings that aiohttp's own HTTP parser rejects.
:func:`send_all` sends them and returns a :class:`FuzzReport` of what came back (statuses, answers
that are not one readable line, internal exception text).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp

from shared.tokens import Secret, issue_token

SESSION = "fuzz"
# What internal exception text looks like in an answer (a class name and a message, a traceback).
INTERNAL = re.compile(
    r"Traceback|object has no attribute|StopIteration|NoneType|\b\w+(?:Error|Exception)\b|  File \"|aiohttp\."
    r"|\bat 0x[0-9a-f]+|coroutine raised",
)
_IDS = ["alice", "fuzz", "", "a" * 129, "a" * 5000, "%00", "..", "%2e%2e", "é", "%FF%FE", "a b", "x%2Fy", "*", "-"]
_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e400", "-1e400", "-1", "0", "1", "abc", "", "1.5", "99999999999999999999",
            "0x10", " 5", "1_000", "١٢"]
_SUBS = ["", "/participants", "/live", "/timeline", "/aggregates", "/alerts", "/report", "/ws", "/sse",
         "/interactions", "/topic", "/nope", "/"]
_CTYPES = ["application/sdp", "application/json", "text/plain", "", "application/sdp; charset=utf-8",
           "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"]
_SDP_OK = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 {fp}\r\na=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n"
)


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    path: str  # already percent-encoded where needed, query included
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    kind: str = "rest"  # "whip", "rest", "live", "page"


@dataclass
class FuzzReport:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    internal_text: list[str] = field(default_factory=list)
    not_one_line: list[str] = field(default_factory=list)
    transport_errors: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)

    def problems(self) -> list[str]:
        return [*self.server_errors[:5], *self.internal_text[:5], *self.not_one_line[:5]]


def _tokens(secret: Secret) -> list[str | None]:
    def tok(role: str, session: str = SESSION, participant: str = "*", ttl: float = 3600) -> str:
        return issue_token(
            secret=secret, session=session, participant=participant, role=role, ttl_s=ttl  # type: ignore[arg-type]
        )

    good = tok("viewer")
    return [
        None, "", "garbage", "a.b.c", "a.b", good + "x", good[:-3], "eyJhbGciOiJub25lIn0.eyJzaWQiOiJmdXp6In0.",
        "x" * 9000, tok("viewer"), tok("teacher", participant="t1"), tok("student", participant="alice"),
        tok("platform"), tok("viewer", session="other"), tok("viewer", ttl=-10), tok("student", participant="bob"),
        issue_token(secret="another-secret-of-sufficient-length-000", session=SESSION, participant="*", role="viewer"),
    ]


def _auth(rng: random.Random, tokens: list[str | None]) -> dict[str, str]:
    token = rng.choice(tokens)
    style = rng.random()
    if token is None:
        return {}
    if style < 0.6:
        return {"Authorization": f"Bearer {token}"}
    if style < 0.7:
        return {"Authorization": rng.choice(["Basic Zm9vOmJhcg==", "Bearer", "bearer  " + token, "Token " + token])}
    return {"X-Token-In-Query": token}  # moved into ?token= by the caller


def _query(rng: random.Random, token: str | None) -> str:
    parts = []
    for name in rng.sample(["limit", "since", "participant", "session", "token", "x"], rng.randint(0, 3)):
        value = rng.choice(_NUMBERS + _IDS) if name != "token" else (token or rng.choice(["", "junk"]))
        parts.append(f"{name}={quote(value, safe='%')}")
    if token is not None and "token=" not in "&".join(parts):
        parts.append(f"token={token}")
    return ("?" + "&".join(parts)) if parts else ""


def _body(rng: random.Random) -> bytes:
    pick = rng.randrange(10)
    if pick == 0:
        return b""
    if pick == 1:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
    if pick == 2:
        return _SDP_OK.format(fp=":".join(["AB"] * 32)).encode()
    if pick == 3:
        return _SDP_OK.replace("v=0", "v=1").format(fp="zz").encode()
    if pick == 4:
        return b"v=0\r\n" + b"a=" + b"x" * rng.choice([10, 70_000])
    if pick == 5:
        junk = [{}, [], None, 1, "x", [{"kind": "chat"}], {"topic": 5}, {"topic": "x" * 9000}]
        return json.dumps(rng.choice(junk)).encode()
    if pick == 6:
        return json.dumps([{"event_id": rng.choice(["e", "", None, 5]), "session": rng.choice([SESSION, "other", ""]),
                            "kind": rng.choice(["chat", "question", "hand_raise", "poll_response", "x"]),
                            "participant": rng.choice(_IDS), "role": rng.choice(["student", "teacher", "x"]),
                            "ts": rng.choice([1.7e9, 0, -1, 1e308, "nan", None]),
                            "text": rng.choice(["hi?", "", "x" * 20_000, None, 5]),
                            "reply_to": rng.choice([None, "e", ""]), "poll_id": rng.choice([None, "p"]),
                            "choice": rng.choice([None, "a", 3])}] * rng.choice([1, 2, 600])).encode()
    if pick == 7:
        return b"{" * rng.randint(1, 5000)
    if pick == 8:
        return b'{"topic": "\\ud800"}'
    return b"\xff\xfe" + "é".encode() * 10


def fuzz_requests(count: int, *, secret: Secret, seed: int = 16) -> Iterator[FuzzRequest]:
    """``count`` reproducible requests, about a third WHIP, a third REST, a sixth live upgrades, the rest pages."""
    rng = random.Random(seed)
    tokens = _tokens(secret)
    for _ in range(count):
        auth = _auth(rng, tokens)
        qtoken = auth.pop("X-Token-In-Query", None)
        headers = dict(auth)
        lane = rng.random()
        if lane < 0.34:
            kind = "whip"
            path = f"/whip/{quote(rng.choice(_IDS), safe='%')}/{quote(rng.choice(_IDS), safe='%')}"
            if rng.random() < 0.3:
                path += "/" + rng.choice(["w0-abc", "nope", "", "a" * 300])
            method = rng.choice(["POST", "POST", "POST", "DELETE", "PATCH", "OPTIONS", "GET", "PUT"])
            headers["Content-Type"] = rng.choice(_CTYPES)
            body = _body(rng)
        elif lane < 0.67:
            kind = "rest"
            session = quote(rng.choice([SESSION, SESSION, "other", *_IDS]), safe="%")
            sub = rng.choice(_SUBS)
            path = "/api/sessions" + ("" if rng.random() < 0.08 else f"/{session}{sub}")
            method = rng.choice(["GET", "GET", "GET", "POST", "PUT", "DELETE", "HEAD"])
            headers["Content-Type"] = rng.choice(_CTYPES)
            body = _body(rng) if method in ("POST", "PUT") else b""
        elif lane < 0.84:
            kind = "live"
            session = quote(rng.choice([SESSION, "other", *_IDS[:6]]), safe="%")
            path = f"/api/sessions/{session}/{rng.choice(['ws', 'sse'])}"
            method = "GET"
            if rng.random() < 0.7:
                headers.update({"Upgrade": rng.choice(["websocket", "WebSocket", "h2c", "x"]),
                                "Connection": rng.choice(["Upgrade", "upgrade, keep-alive", "close"])})
                if rng.random() < 0.7:
                    headers["Sec-WebSocket-Key"] = rng.choice(["dGhlIHNhbXBsZSBub25jZQ==", "short", ""])
                if rng.random() < 0.7:
                    headers["Sec-WebSocket-Version"] = rng.choice(["13", "8", "x", ""])
            else:
                headers["Accept"] = "text/event-stream"
            body = b""
        else:
            kind = "page"
            path = rng.choice(["/", "/join", "/join/join.js", "/dashboard", "/api/openapi.json", "/metrics",
                               "/healthz", "/readyz", "/static/gateway/dashboard.js", "/static/../pyproject.toml",
                               "/%2e%2e/%2e%2e/etc/passwd", "/nope", "/" + "a" * 3000])
            method = rng.choice(["GET", "GET", "POST", "OPTIONS", "TRACE"])
            body = b""
        if rng.random() < 0.1:
            headers[rng.choice(["X-Forwarded-For", "Range", "If-Match", "Origin"])] = rng.choice(
                ["1.2.3.4", "bytes=9-1", "*", "null", "\t"]
            )
        yield FuzzRequest(method=method, path=path + _query(rng, qtoken), headers=headers, body=body, kind=kind)


def raw_requests() -> list[bytes]:
    """Requests aiohttp's parser rejects (bad request line, header, length, chunking, version)."""
    long_header = b"X-Long: " + b"a" * 20_000
    return [
        b"GET /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /\x00secret HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: token=abc\r\n\r\n",
        b"POST /whip/a/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nsecret-token\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + long_header + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET /?token=leak HTTP/1.1\r\nHost: x\r\nX: \x01\x02\r\n\r\n",
        b"G\xffT / HTTP/1.1\r\n\r\n",
    ]


async def seed_session(base_url: str, *, secret: Secret) -> None:
    """Give the fuzzed session a history (one chat message), so its REST routes answer past the 404."""
    token = issue_token(secret=secret, session=SESSION, participant="*", role="platform")
    event = {"event_id": "fuzz-seed", "session": SESSION, "participant": "alice", "kind": "chat",
             "ts": 1_700_000_000.0, "text": "hello?"}
    async with aiohttp.ClientSession() as http:
        url = f"{base_url}/api/sessions/{SESSION}/interactions"
        async with http.post(url, json=[event], headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 202, await resp.text()
        viewer = issue_token(secret=secret, session=SESSION, participant="*", role="viewer")
        auth = {"Authorization": f"Bearer {viewer}"}
        for _ in range(100):  # the history reader picks it up from the event log
            async with http.get(f"{base_url}/api/sessions/{SESSION}", headers=auth) as r:
                if r.status == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError("the seeded session never appeared in the gateway's history")


def _check(report: FuzzReport, label: str, status: int, text: str) -> None:
    report.statuses[status] += 1
    if status >= 500:
        report.server_errors.append(f"{label} -> {status}: {text[:200]!r}")
    if status >= 400:
        if INTERNAL.search(text):
            report.internal_text.append(f"{label} -> {status}: {text[:200]!r}")
        if text.strip().count("\n") > 0 and not text.lstrip().startswith("{"):
            report.not_one_line.append(f"{label} -> {status}: {text[:200]!r}")


async def send_all(base_url: str, requests: list[FuzzRequest], *, concurrency: int = 8) -> FuzzReport:
    """Send every request (``concurrency`` at a time), reading each answer's first 4 KB at most."""
    report = FuzzReport()
    queue: asyncio.Queue[FuzzRequest] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    timeout = aiohttp.ClientTimeout(total=10, sock_read=3)

    async def one(http: aiohttp.ClientSession, r: FuzzRequest) -> None:
        label = f"{r.method} {r.path[:120]}"
        try:
            async with http.request(
                r.method, base_url + r.path, headers=r.headers, data=r.body or None, allow_redirects=False,
                skip_auto_headers=("Content-Type",) if "Content-Type" not in r.headers else (),
            ) as resp:
                text = "" if resp.status in (101, 200) else (await resp.content.read(4096)).decode(errors="replace")
                _check(report, label, resp.status, text)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            report.transport_errors[type(exc).__name__] += 1
        report.sent += 1
        report.by_kind[r.kind] += 1

    async def worker() -> None:
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as http:
            while not queue.empty():
                await one(http, queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return report


async def send_raw(host: str, port: int, payloads: list[bytes]) -> FuzzReport:
    """Send each raw payload on its own connection; the status line and the body are checked."""
    report = FuzzReport()
    for payload in payloads:
        label = repr(payload[:40])
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(payload)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(65536), 5)
            writer.close()
        except (OSError, TimeoutError) as exc:
            report.transport_errors[type(exc).__name__] += 1
            continue
        report.sent += 1
        report.by_kind["raw"] += 1
        head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
        try:
            status = int(head.split(" ", 2)[1])
        except (IndexError, ValueError):
            report.transport_errors["no-status-line"] += 1
            continue
        _check(report, label, status, body)
        for secret in ("secret-token", "token=leak", "secret", "aaaaaaaaaaaaaaaaaaaa"):
            if secret in body:
                report.internal_text.append(f"{label} -> {status}: echoes its input: {body[:200]!r}")
                break
    return report
