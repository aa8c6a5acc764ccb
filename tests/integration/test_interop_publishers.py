"""Third-party WHIP publishers into a real ``classpulse up``: FFmpeg 8's ``whip`` muxer (PyAV's bundled
libavformat: H.264 baseline + stereo 48 kHz Opus) and Google's libwebrtc through Node ``@roamhq/wrtc``
(VP8 + Opus), each publishing a real face (the astronaut photo) and espeak-ng speech for a few seconds.
Each asserts that video frames and audio chunks reached inference and that the participant was scored
present and speaking.

FFmpeg built with GnuTLS makes a secp224r1 DTLS certificate that aiortc's OpenSSL refuses (see
``services.ingest.aiortc_hooks``), so the FFmpeg publisher is given a P-256 one (``cert_file``/``key_file``,
as the README tells operators); a P-224 one is refused, with the curve and the fix named in the server's log.
The Node publisher needs ``./dev setup`` (``npm ci`` in ``tests/interop/wrtc``): without it the test fails.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from numpy.typing import NDArray
from prometheus_client.parser import text_string_to_metric_families

from shared.testkit.photos import astronaut
from shared.testkit.speech import SPEECH_TEXT, espeak, trim
from shared.tokens import issue_token
from tests.integration.classpulse_up import REPO, SECRET, UpProcess, classpulse_up

pytestmark = pytest.mark.integration

WRTC = REPO / "tests" / "interop" / "wrtc"
SECONDS = 6.0  # media published by each publisher
FPS = 10
WIDTH, HEIGHT = 640, 480
RATE = 48_000
SCORED_WITHIN_S = 20.0  # after the publisher stopped, for a loaded 2-core CI machine


def _camera() -> NDArray[np.uint8]:
    """The astronaut's head and shoulders on a plain 640x480 background, RGB."""
    canvas = np.full((HEIGHT, WIDTH, 3), 90, dtype=np.uint8)
    canvas[48:432, 128:512] = astronaut()[:384, 64:448, ::-1]
    return canvas


def _speech() -> NDArray[np.int16]:
    """espeak-ng speech at 48 kHz, mono, looped to a little more than SECONDS."""
    wave = trim(espeak(SPEECH_TEXT, rate=RATE))
    wave = np.tile(wave, int(np.ceil((SECONDS + 1) * RATE / len(wave))))
    return (0.5 * wave / max(1e-6, float(np.abs(wave).max())) * 32767).astype(np.int16)


def _certificate(folder: Path, curve: ec.EllipticCurve) -> tuple[Path, Path]:
    """A self-signed ECDSA certificate and key (PEM) on ``curve``, as a DTLS identity."""
    key = ec.generate_private_key(curve)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "whip-publisher")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{curve.name}.crt", folder / f"{curve.name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def _ffmpeg_publish(url: str, token: str, cert: tuple[Path, Path], seconds: float) -> None:
    """FFmpeg's whip muxer: H.264 baseline (libx264) + stereo 48 kHz Opus, paced in real time."""
    if "whip" not in av.formats_available:
        pytest.fail("this PyAV's FFmpeg has no whip muxer; install av==18.1.0 (./dev setup)", pytrace=False)
    options = {"authorization": token, "cert_file": str(cert[0]), "key_file": str(cert[1])}
    out = av.open(url, "w", format="whip", options=options)
    try:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.options = {"profile": "baseline", "preset": "ultrafast", "tune": "zerolatency", "g": "10"}
        audio = out.add_stream("libopus", rate=RATE, layout="stereo")
        audio.codec_context.bit_rate = 64_000
        picture, speech = _camera(), _speech()
        frame_samples = 960  # 20 ms Opus frames
        started = time.monotonic()
        sent = 0
        for i in range(int(seconds * FPS)):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in video.encode(frame):
                out.mux(packet)
            while sent * frame_samples < (i + 1) * RATE // FPS:
                mono = speech[sent * frame_samples : (sent + 1) * frame_samples]
                chunk = av.AudioFrame.from_ndarray(
                    np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo"
                )
                chunk.sample_rate, chunk.pts = RATE, sent * frame_samples
                for packet in audio.encode(chunk):
                    out.mux(packet)
                sent += 1
            time.sleep(max(0.0, started + (i + 1) / FPS - time.monotonic()))
    finally:
        out.close()  # sends DELETE on the WHIP resource


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def _get(url: str, token: str | None = None) -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
        return bytes(resp.read())


class Evidence:
    """What ``up`` shows of one participant while and after they publish (polled)."""

    def __init__(self, up: UpProcess, session: str, participant: str) -> None:
        self.up, self.session, self.participant = up, session, participant
        self.viewer = issue_token(secret=SECRET, session=session, participant="*", role="viewer")
        self.present = self.speaking = False
        self.video = self.audio = 0.0
        self._before = (0.0, 0.0)
        self.poll()  # counters before this publisher (the tests share one ``up``)
        self._before = (self.video, self.audio)

    def poll(self) -> None:
        live = json.loads(_get(f"{self.up.url}/api/sessions/{self.session}/live", self.viewer))
        for row in live["participants"]:
            if row["participant"] == self.participant:
                self.present |= bool(row["present"])
                self.speaking |= bool(row["speaking"])
        metrics = _get(f"{self.up.url}/metrics").decode()
        self.video = _sample(metrics, "classpulse_messages_total", stage="inference", kind="video") - self._before[0]
        self.audio = _sample(metrics, "classpulse_messages_total", stage="inference", kind="audio") - self._before[1]

    @property
    def complete(self) -> bool:
        return self.present and self.speaking and self.video > 0 and self.audio > 0

    def watch(self, publishing: Callable[[], bool]) -> None:
        """Poll while the publisher runs and until everything arrived (or SCORED_WITHIN_S after it stopped)."""
        deadline = None
        while not self.complete:
            self.poll()
            if deadline is None and not publishing():
                deadline = time.monotonic() + SCORED_WITHIN_S
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.5)

    def check(self, who: str) -> None:
        print(f"{who}: {self.video:.0f} frames, {self.audio:.0f} audio chunks analysed; present, speaking")
        assert self.video > 0, f"no video frame from {who} reached inference"
        assert self.audio > 0, f"no audio chunk from {who} reached inference"
        assert self.present, f"{who}'s participant was never scored present; log: {self.up.log.read_text()[-1500:]}"
        assert self.speaking, f"{who}'s participant was never scored speaking ({self.audio:.0f} audio chunks analysed)"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    """One ``classpulse up`` for the module (each test publishes into its own session)."""
    with classpulse_up(tmp_path_factory.mktemp("up")) as running:
        yield running


def test_ffmpeg_whip_publishes_h264_and_stereo_opus(up: UpProcess, tmp_path: Path) -> None:
    session, participant = "ffmpeg-class", "ffmpeg-student"
    token = issue_token(secret=SECRET, session=session, participant=participant, role="student")
    cert = _certificate(tmp_path, ec.SECP256R1())
    errors: list[BaseException] = []

    def publish(url: str) -> None:
        try:
            _ffmpeg_publish(url, token, cert, SECONDS)
        except BaseException as exc:  # the main thread reports it
            errors.append(exc)

    evidence = Evidence(up, session, participant)
    thread = threading.Thread(target=publish, args=(f"{up.url}/whip/{session}/{participant}",), daemon=True)
    thread.start()
    evidence.watch(thread.is_alive)
    thread.join(timeout=30)
    assert not errors, f"FFmpeg's whip muxer failed: {errors[0]!r}; log: {up.log.read_text()[-1500:]}"
    evidence.check("FFmpeg")


def test_ffmpeg_p224_certificate_is_refused_and_the_log_says_why(up: UpProcess, tmp_path: Path) -> None:
    """The certificate FFmpeg + GnuTLS makes by itself (secp224r1): refused, and the log names curve and fix."""
    session, participant = "ffmpeg-p224", "p224-student"
    token = issue_token(secret=SECRET, session=session, participant=participant, role="student")
    cert = _certificate(tmp_path, ec.SECP224R1())
    before = _sample(_get(f"{up.url}/metrics").decode(), "classpulse_errors_total", stage="ingest", error="dtls_failed")
    with pytest.raises(av.error.OSError):  # FFmpeg: "DTLS session failed"
        _ffmpeg_publish(f"{up.url}/whip/{session}/{participant}", token, cert, 1.0)
    deadline = time.monotonic() + 10
    while "secp224r1" not in up.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = up.log.read_text()
    assert "secp224r1 curve, which WebRTC peers refuse" in log, log[-2000:]
    assert "-cert_file/-key_file" in log
    metrics = _get(f"{up.url}/metrics").decode()
    assert _sample(metrics, "classpulse_errors_total", stage="ingest", error="dtls_failed") > before


def _node_publisher() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; install Node.js >= 18 (apt-get install nodejs npm), then ./dev setup",
                    pytrace=False)
    if not (WRTC / "node_modules" / "@roamhq" / "wrtc").is_dir():
        pytest.fail(f"@roamhq/wrtc is not installed in {WRTC}; run ./dev setup (npm ci there)", pytrace=False)
    return [node, str(WRTC / "publish.mjs")]


def test_libwebrtc_node_publishes_vp8_and_opus(up: UpProcess, tmp_path: Path) -> None:
    command = _node_publisher()
    session, participant = "wrtc-class", "wrtc-student"
    token = issue_token(secret=SECRET, session=session, participant=participant, role="student")
    frame = av.VideoFrame.from_ndarray(_camera(), format="rgb24").reformat(format="yuv420p")
    (tmp_path / "camera.i420").write_bytes(frame.to_ndarray().tobytes())
    (tmp_path / "speech.s16").write_bytes(_speech().astype("<i2").tobytes())
    evidence = Evidence(up, session, participant)
    args = [f"{up.url}/whip/{session}/{participant}", str(tmp_path / "camera.i420"), str(WIDTH), str(HEIGHT),
            str(tmp_path / "speech.s16"), str(SECONDS)]
    proc = subprocess.Popen(
        [*command, *args], cwd=WRTC, env={**os.environ, "WHIP_TOKEN": token},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        evidence.watch(lambda: proc.poll() is None)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"the libwebrtc publisher failed: {err.strip()[-1000:]}"
    result = json.loads(out.strip().splitlines()[-1])
    assert result["state"] == "connected" and result["frames"] >= SECONDS * FPS * 0.5, result
    evidence.check("libwebrtc (Node)")
