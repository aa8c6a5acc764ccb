"""Tokens are JWT (HS256, kid, iat/exp) with a lifetime bound and two-key rotation; weak secrets are refused
beyond loopback at start-up, and check-config says which keys are active without printing a secret."""

from __future__ import annotations

import json

import jwt
import pytest

from shared.security import check_token_secret, is_loopback
from shared.service import run_service
from shared.settings import DEV_TOKEN_SECRET, CommonSettings
from shared.tokens import Keyring, TokenError, TokenKey, issue_token, key_id_of, verify_token

pytestmark = pytest.mark.unit
OLD = "old-secret-0123456789abcdef0123456789abcdef"
NEW = "new-secret-0123456789abcdef0123456789abcdef"


def test_a_token_is_a_standard_hs256_jwt_with_kid_iat_exp_and_the_scopes() -> None:
    token = issue_token(secret=NEW, session="s1", participant="alice", role="student", ttl_s=600, now=1_000)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "JWT", "kid": key_id_of(NEW)}
    claims = jwt.decode(token, NEW, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"sid": "s1", "sub": "alice", "role": "student", "iat": 1_000, "exp": 1_600}
    checked = verify_token(token, secret=NEW, now=1_100)
    assert (checked.session, checked.participant, checked.role, checked.issued, checked.expires) == (
        "s1",
        "alice",
        "student",
        1_000,
        1_600,
    )
    assert checked.key_id == key_id_of(NEW) and checked.can_publish("s1", "alice")


def test_a_platform_backend_can_mint_tokens_with_any_jwt_library() -> None:
    ring = Keyring(current=TokenKey("2026-09", NEW))
    minted = jwt.encode(
        {"sid": "s1", "sub": "*", "role": "platform", "iat": 1_000, "exp": 2_000},
        NEW,
        algorithm="HS256",
        headers={"kid": "2026-09"},
    )
    assert verify_token(minted, secret=ring, now=1_500).role == "platform"


@pytest.mark.parametrize(
    ("claims", "headers", "match"),
    [
        ({"sid": "s1", "sub": "a", "role": "student", "iat": 1_000, "exp": 1_000 + 25 * 3600}, {}, "lifetime"),
        ({"sid": "s1", "sub": "a", "role": "student", "iat": 5_000, "exp": 6_000}, {}, "future"),
        ({"sid": "s1", "sub": "a", "role": "student", "exp": 2_000}, {}, "malformed"),
        ({"sid": "s1", "sub": "a", "role": "root", "iat": 1_000, "exp": 2_000}, {}, "unknown role"),
        ({"sid": "s1", "sub": "a", "role": "student", "iat": 1_000, "exp": 1_100}, {}, "expired"),
        ({"sid": "s1", "sub": "a", "role": "student", "iat": 1_000, "exp": 2_000}, {"kid": "nope"}, "does not accept"),
    ],
)
def test_tokens_outside_the_rules_are_401(claims: dict[str, object], headers: dict[str, str], match: str) -> None:
    ring = Keyring(current=TokenKey("k1", NEW))
    token = jwt.encode(claims, NEW, algorithm="HS256", headers={"kid": "k1", **headers})
    with pytest.raises(TokenError, match=match) as info:
        verify_token(token, secret=ring, now=1_500)
    assert info.value.status == 401


def test_unsigned_tampered_and_other_algorithm_tokens_are_refused() -> None:
    good = issue_token(secret=NEW, session="s1", participant="*", role="viewer", now=1_000)
    body = good.split(".")[1]
    none = jwt.encode({"sid": "s1", "sub": "*", "role": "teacher", "iat": 1, "exp": 9}, None, algorithm="none")
    for token, match in [
        (none, "HS256"),
        (f"{good.split('.')[0]}.{body}x.{good.split('.')[2]}", "signature|malformed"),
        (good[:-2] + ("AA" if good[-2:] != "AA" else "BB"), "signature"),
        ("x" * 50, "malformed"),
    ]:
        with pytest.raises(TokenError, match=match):
            verify_token(token, secret=NEW, now=1_100)


def test_rotation_accepts_the_previous_key_until_it_is_removed() -> None:
    before = Keyring(current=TokenKey("2026-08", OLD))
    during = Keyring(current=TokenKey("2026-09", NEW), previous=TokenKey("2026-08", OLD))
    after = Keyring(current=TokenKey("2026-09", NEW))
    old_token = issue_token(secret=before, session="s1", participant="*", role="viewer", now=1_000)
    new_token = issue_token(secret=during, session="s1", participant="*", role="viewer", now=1_000)
    assert jwt.get_unverified_header(new_token)["kid"] == "2026-09"  # signed with the current key
    assert verify_token(old_token, secret=during, now=1_100).key_id == "2026-08"
    assert verify_token(new_token, secret=after, now=1_100).key_id == "2026-09"
    with pytest.raises(TokenError, match="does not accept"):
        verify_token(old_token, secret=after, now=1_100)


def test_revocation_cut_off_refuses_older_tokens() -> None:
    ring = Keyring(current=TokenKey("k", NEW), revoked_before=2_000)
    with pytest.raises(TokenError, match="revoked"):
        verify_token(
            issue_token(secret=ring, session="s", participant="*", role="viewer", now=1_000), secret=ring, now=2_100
        )
    assert verify_token(
        issue_token(secret=ring, session="s", participant="*", role="viewer", now=2_050), secret=ring, now=2_100
    )


def test_settings_build_the_keyring_and_bound_the_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSPULSE_TOKEN_SECRET", NEW)
    monkeypatch.setenv("CLASSPULSE_TOKEN_KEY_ID", "2026-09")
    monkeypatch.setenv("CLASSPULSE_TOKEN_SECRET_PREVIOUS", OLD)
    monkeypatch.setenv("CLASSPULSE_TOKEN_MAX_TTL_S", "3600")
    ring = CommonSettings().token_keyring()
    assert ring.key_ids == ("2026-09", key_id_of(OLD)) and ring.max_ttl_s == 3600
    with pytest.raises(ValueError, match="at most 3600 s"):
        issue_token(secret=ring, session="s", participant="*", role="viewer", ttl_s=7200)


def test_token_command_refuses_a_ttl_beyond_the_bound(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli import main

    monkeypatch.setenv("CLASSPULSE_TOKEN_SECRET", NEW)
    assert main(["token", "--session", "s1", "--role", "viewer", "--ttl", "90000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: token lifetime must be at most 86400 s") and err.endswith("choose a shorter --ttl")
    assert "\n" not in err
    assert main(["token", "--session", "s1", "--role", "viewer", "--ttl", "0"]) == 2
    assert main(["token", "--session", "s1", "--role", "viewer", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    assert jwt.get_unverified_header(token)["kid"] == key_id_of(NEW)


def test_check_config_names_the_key_ids_and_never_prints_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli import main

    monkeypatch.setenv("CLASSPULSE_TOKEN_SECRET", NEW)
    monkeypatch.setenv("CLASSPULSE_TOKEN_SECRET_PREVIOUS", OLD)
    monkeypatch.setenv("CLASSPULSE_TOKEN_KEY_ID_PREVIOUS", "2026-08")
    assert main(["check-config"]) == 0
    out = capsys.readouterr()
    assert NEW not in out.out + out.err and OLD not in out.out + out.err
    tokens = json.loads(out.out)["tokens"]
    assert tokens["accepted_key_ids"] == [key_id_of(NEW), "2026-08"]
    assert tokens["development_secret"] is False and tokens["secret_ok_beyond_loopback"] is True
    monkeypatch.delenv("CLASSPULSE_TOKEN_SECRET")
    monkeypatch.delenv("CLASSPULSE_TOKEN_SECRET_PREVIOUS")
    assert main(["check-config"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["tokens"]["development_secret"] is True
    assert "development secret" in out.err and DEV_TOKEN_SECRET not in out.out + out.err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("classpulse.example", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("secret", [DEV_TOKEN_SECRET, "", "short-secret"])
def test_weak_secrets_are_refused_beyond_loopback_and_warned_about_on_it(secret: str) -> None:
    common = CommonSettings(token_secret=secret)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"refuses to listen on 0\.0\.0\.0") as info:
        check_token_secret(common, host="0.0.0.0", service="gateway")
    assert "CLASSPULSE_TOKEN_SECRET" in str(info.value) and (not secret or secret not in str(info.value))
    warning = check_token_secret(common, host="127.0.0.1", service="gateway")
    assert warning is not None and warning.startswith("warning: ")
    assert check_token_secret(CommonSettings(token_secret=NEW), host="0.0.0.0", service="x") is None  # type: ignore[arg-type]


def test_a_service_bound_beyond_loopback_with_the_development_secret_does_not_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []

    async def main(settings: str, _: object) -> int:
        ran.append(settings)
        return 0

    monkeypatch.delenv("CLASSPULSE_TOKEN_SECRET", raising=False)
    assert run_service("gateway", settings=lambda _: "0.0.0.0", main=main, listens_on=lambda s: s) == 2  # type: ignore[arg-type]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: gateway refuses to listen on 0.0.0.0")
    assert "openssl rand -hex 32" in err[0] and not ran
    assert run_service("gateway", settings=lambda _: "127.0.0.1", main=main, listens_on=lambda s: s) == 0  # type: ignore[arg-type]
    assert capsys.readouterr().err.startswith("warning: CLASSPULSE_TOKEN_SECRET is the development secret")
    monkeypatch.setenv("CLASSPULSE_TOKEN_SECRET", NEW)
    assert run_service("gateway", settings=lambda _: "0.0.0.0", main=main, listens_on=lambda s: s) == 0  # type: ignore[arg-type]
    assert ran == ["127.0.0.1", "0.0.0.0"]


def test_the_real_commands_refuse_too(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli import main

    monkeypatch.delenv("CLASSPULSE_TOKEN_SECRET", raising=False)
    for argv in (
        ["gateway", "--host", "0.0.0.0", "--port", "0"],
        ["ingest", "--host", "0.0.0.0", "--port", "0"],
        ["up", "--host", "0.0.0.0", "--port", "0"],
    ):
        assert main(argv) == 2, argv
        assert "refuses to listen on 0.0.0.0" in capsys.readouterr().err
