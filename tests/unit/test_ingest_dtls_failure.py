"""Why a WHIP connection's DTLS failed, from the publisher's certificate (aiortc_hooks.dtls_failure)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.ingest.aiortc_hooks import DtlsFailure, dtls_failure

pytestmark = pytest.mark.unit


def _cert(key: Any) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "lavf")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@dataclass
class _Ssl:
    cert: x509.Certificate | None

    def get_peer_certificate(self, *, as_cryptography: bool) -> x509.Certificate | None:
        assert as_cryptography
        return self.cert


@dataclass
class _Ice:
    state: str


@dataclass
class _Dtls:
    state: str
    transport: _Ice
    _role: str
    _ssl: _Ssl | None


@dataclass
class _Receiver:
    transport: _Dtls


@dataclass
class _Transceiver:
    receiver: _Receiver


@dataclass
class _Pc:
    transceivers: list[_Transceiver] = field(default_factory=list)

    def getTransceivers(self) -> list[_Transceiver]:
        return self.transceivers


def _pc(dtls: str, ice: str, cert: x509.Certificate | None, role: str = "client") -> Any:
    return _Pc([_Transceiver(_Receiver(_Dtls(dtls, _Ice(ice), role, _Ssl(cert))))])


def test_ffmpeg_gnutls_p224_certificate_names_curve_and_fix() -> None:
    failure = dtls_failure(_pc("failed", "completed", _cert(ec.generate_private_key(ec.SECP224R1())), "server"))
    assert failure == DtlsFailure(role="server", peer_key="EC secp224r1")
    assert "secp224r1 curve, which WebRTC peers refuse" in failure.hint
    assert "-cert_file/-key_file" in failure.hint and "P-256" in failure.hint


def test_rsa_certificate_and_no_certificate_say_what_is_needed() -> None:
    rsa_failure = dtls_failure(_pc("failed", "completed", _cert(rsa.generate_private_key(65537, 2048))))
    assert rsa_failure is not None and rsa_failure.peer_key == "RSA 2048"
    assert "needs an ECDSA P-256 certificate" in rsa_failure.hint
    none_failure = dtls_failure(_pc("failed", "connected", None))
    assert none_failure is not None and "sent no DTLS certificate" in none_failure.hint


def test_a_p256_failure_is_reported_without_blaming_the_curve() -> None:
    failure = dtls_failure(_pc("failed", "completed", _cert(ec.generate_private_key(ec.SECP256R1()))))
    assert failure is not None and failure.peer_key == "EC secp256r1"
    assert "refuse" not in failure.hint and "secp256r1" in failure.hint


@pytest.mark.parametrize(("dtls", "ice"), [("connected", "completed"), ("failed", "failed"), ("new", "checking")])
def test_no_dtls_failure_when_dtls_is_fine_or_ice_never_connected(dtls: str, ice: str) -> None:
    assert dtls_failure(_pc(dtls, ice, None)) is None


def test_a_connection_without_transceivers_or_ssl_is_handled() -> None:
    assert dtls_failure(cast(Any, _Pc())) is None
    bare: Any = _Pc([_Transceiver(_Receiver(_Dtls("failed", _Ice("completed"), "client", None)))])
    assert dtls_failure(bare) == DtlsFailure(role="client", peer_key=None)
