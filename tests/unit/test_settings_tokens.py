"""Settings reject unknown keys and hide secrets; tokens are scoped and signed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import CommonSettings, SettingsError, check_environment
from shared.tokens import Claims, TokenError, TokenRole, bearer, issue_token, verify_token

pytestmark = pytest.mark.unit


def test_unknown_classpulse_variable_is_rejected_with_a_hint() -> None:
    with pytest.raises(SettingsError, match="did you mean CLASSPULSE_TRANSPORT"):
        check_environment({"CLASSPULSE_TRANSPRT": "memory"}, [CommonSettings])
    check_environment({"CLASSPULSE_TRANSPORT": "memory", "OTHER": "x"}, [CommonSettings])


def test_invalid_value_and_secret_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLASSPULSE_MEDIA_STREAM_MAXLEN", "1")
    with pytest.raises(ValidationError):
        CommonSettings()
    monkeypatch.setenv("CLASSPULSE_MEDIA_STREAM_MAXLEN", "64")
    monkeypatch.setenv("CLASSPULSE_TOKEN_SECRET", "s3cret-value")
    settings = CommonSettings()
    assert "s3cret-value" not in repr(settings)
    assert settings.token_secret.get_secret_value() == "s3cret-value"


def test_token_round_trip_and_scope() -> None:
    token = issue_token(secret="k", session="s1", participant="p1", role="student", now=100.0)
    claims = verify_token(token, secret="k", now=101.0)
    assert claims.can_publish("s1", "p1")
    assert not claims.can_publish("s2", "p1")
    assert not claims.can_view("s1")


@pytest.mark.parametrize(
    ("token", "secret", "now", "match"),
    [
        ("garbage", "k", 101.0, "malformed"),
        (None, "other", 101.0, "key this server does not accept"),
        (None, "k", 10**9, "expired"),
    ],
)
def test_bad_tokens_are_401(token: str | None, secret: str, now: float, match: str) -> None:
    good = issue_token(secret="k", session="s1", participant="p1", role="viewer", now=100.0, ttl_s=60)
    with pytest.raises(TokenError, match=match) as info:
        verify_token(token or good, secret=secret, now=now)
    assert info.value.status == 401


def test_bearer_header_parsing() -> None:
    assert bearer("Bearer abc") == "abc"
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(TokenError):
            bearer(header)


def test_interaction_scopes_by_role() -> None:
    def claims(role: TokenRole, participant: str = "*") -> Claims:
        return verify_token(issue_token(secret="k", session="s1", participant=participant, role=role), secret="k")

    student, teacher = claims("student", "p1"), claims("teacher", "t1")
    platform, viewer = claims("platform"), claims("viewer")
    assert student.can_post_interaction("s1", "p1") and not student.can_post_interaction("s1", "p2")
    assert teacher.can_post_interaction("s1", "p2") and platform.can_post_interaction("s1", "anyone")
    assert not platform.can_post_interaction("s2", "p1") and not viewer.can_post_interaction("s1", "p1")
    assert not platform.can_view("s1") and not platform.can_publish("s1", "p1")  # interactions only


def test_token_command_issues_platform_tokens_without_a_participant(capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli import main

    assert main(["token", "--session", "s1", "--role", "platform"]) == 0
    printed = capsys.readouterr().out.strip()
    claims = verify_token(printed, secret=CommonSettings().token_secret.get_secret_value())
    assert (claims.role, claims.participant) == ("platform", "*")
    assert main(["token", "--session", "s1", "--role", "student"]) == 2  # students name themselves
