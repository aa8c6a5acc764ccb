"""Typed settings. Only settings classes read the environment.

Every variable is ``CLASSPULSE_*``. :class:`CommonSettings` holds what all services
share (transports, logging, tokens); each service has its own class with its own prefix
(``CLASSPULSE_INGEST_*`` ...), registered with :func:`register_settings` so that
:func:`check_environment` can reject unknown ``CLASSPULSE_*`` variables (a typo must not
silently fall back to a default).

Every service checks against *all* registered classes, so one env file (compose ``.env``, a
Kubernetes ConfigMap) serves every service. The registry is complete once each service's
settings module is imported; the composition root (``services.cli``) does that before any
command runs, so no service has to import another service to know its variables.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from shared.tokens import Keyring

S = TypeVar("S", bound=type[BaseSettings])

ENV_ROOT = "CLASSPULSE_"
# Reserved for the test harness and deploy/local/services.sh, not read by services.
RESERVED_PREFIXES = ("CLASSPULSE_TEST_", "CLASSPULSE_LOCAL_")
DEV_TOKEN_SECRET = "classpulse-dev-secret-change-me"

_REGISTRY: list[type[BaseSettings]] = []


def register_settings(cls: S) -> S:
    """Declare a settings class so its variables count as known."""
    if cls not in _REGISTRY:
        _REGISTRY.append(cls)
    return cls


def registered_settings() -> list[type[BaseSettings]]:
    return list(_REGISTRY)


def env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {(prefix + name).upper() for name in cls.model_fields}


class SettingsError(ValueError):
    """The environment holds unknown or invalid ClassPulse settings."""


def check_environment(
    environ: Mapping[str, str] | None = None, classes: Iterable[type[BaseSettings]] | None = None
) -> None:
    """Raise :class:`SettingsError` naming every unknown ``CLASSPULSE_*`` variable.

    Known means: declared by one of ``classes`` (default: every registered settings class).
    """
    env = os.environ if environ is None else environ
    known: set[str] = set()
    for cls in classes if classes is not None else _REGISTRY:
        known |= env_names(cls)
    unknown = sorted(
        k
        for k in env
        if k.upper().startswith(ENV_ROOT) and k.upper() not in known and not k.upper().startswith(RESERVED_PREFIXES)
    )
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name.upper(), sorted(known), n=1)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise SettingsError("unknown ClassPulse settings: " + ", ".join(hints) + "; see docs/settings.md")


def settings_error_line(exc: ValidationError) -> str:
    """One readable line for invalid settings: each variable with what is wrong (secrets never echoed)."""
    cls = next((c for c in _REGISTRY if c.__name__ == exc.title), None)
    prefix = str(cls.model_config.get("env_prefix", "")) if cls is not None else ""
    problems = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        name = (prefix + field).upper() if field else f"{prefix}*"
        info = cls.model_fields.get(field) if cls is not None else None
        secret = info is not None and info.annotation is SecretStr
        shown = "" if secret or "input" not in error or isinstance(error["input"], dict) else f"={error['input']!r}"
        problems.append(f"{name}{shown}: {error['msg']}")
    return "invalid ClassPulse settings: " + "; ".join(problems) + "; see docs/settings.md"


def _int_text(value: Any) -> Any:
    """Environment values are text: ``"128"`` -> 128 before an ``int`` Literal checks it (pydantic won't)."""
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    return value


IntFromText = BeforeValidator(_int_text)
"""Metadata for an ``Annotated[Literal[64, 128], IntFromText]`` setting, so it can be set from the environment."""


class StrictSettings(BaseSettings):
    """Base for every ClassPulse settings class: unknown keys rejected, values validated."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True, case_sensitive=False)


@register_settings
class CommonSettings(StrictSettings):
    """Settings every service shares: transports, logging, tokens."""

    model_config = SettingsConfigDict(env_prefix=ENV_ROOT, extra="forbid", case_sensitive=False)

    transport: Literal["memory", "distributed"] = Field(
        default="memory",
        description="'memory': everything in one process (embedded default); 'distributed': Redis + Kafka.",
    )
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"), description="Redis URL (media stream and live fan-out)."
    )
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers, comma separated.")
    media_shards: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Media shard streams: a participant's media always goes to the same shard (hash of "
        "session/participant), and each shard is read by the one inference worker holding its lease; more shards "
        "than workers spread load. Ingest and inference must use the same value.",
    )
    media_stream_maxlen: int = Field(
        default=64,
        ge=8,
        le=100_000,
        description="Bound of each media shard stream (undelivered + in-flight entries); the oldest are evicted "
        "past it (counted).",
    )
    memory_event_retention: int = Field(
        default=300_000,
        ge=1_000,
        le=10_000_000,
        description="Embedded mode: newest events kept per topic (~1 KB each), like Kafka retention.",
    )
    token_secret: SecretStr = Field(
        default=SecretStr(DEV_TOKEN_SECRET),
        description="HS256 secret that signs bearer tokens (JWT); set your own, at least 32 characters "
        "(`openssl rand -hex 32`). A service bound beyond loopback refuses to start with the development default.",
    )
    token_key_id: str = Field(
        default="",
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Key id (JWT `kid` header) of CLASSPULSE_TOKEN_SECRET; empty: derived from the secret.",
    )
    token_secret_previous: SecretStr = Field(
        default=SecretStr(""),
        description="The previous signing secret, still accepted while its tokens run out (key rotation); "
        "empty: none.",
    )
    token_key_id_previous: str = Field(
        default="",
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Key id of CLASSPULSE_TOKEN_SECRET_PREVIOUS; empty: derived from that secret.",
    )
    token_max_ttl_s: float = Field(
        default=24 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="Longest token lifetime (exp - iat) issued or accepted, in seconds.",
    )
    token_revoked_before: float = Field(
        default=0.0,
        ge=0.0,
        description="Unix time: tokens issued before it are refused (revokes every older token at once); 0: off.",
    )
    trust_forwarded_for: bool = Field(
        default=False,
        description="Behind a reverse proxy: rate limits per address use the rightmost X-Forwarded-For entry "
        "(the one your proxy adds) instead of the connection's address. Leave off without a proxy (clients could "
        "choose their address).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_json: bool = Field(default=False, description="Write logs as JSON lines.")
    log_redact_pii: bool = Field(default=False, description="Drop personal data (participant ids) from logs.")
    keep_text: bool = Field(
        default=False,
        description="Keep raw chat text and transcripts in what is stored and forwarded (personal data); "
        "by default only derived features (is_question, words) leave the text stage.",
    )
    task_backoff_initial_ms: int = Field(
        default=200,
        ge=10,
        le=60_000,
        description="Supervised background tasks (readers, writers, heartbeats): first retry delay after a "
        "failure; it doubles per attempt (with jitter) up to task_backoff_max_ms.",
    )
    task_backoff_max_ms: int = Field(
        default=5_000, ge=10, le=300_000, description="Supervised background tasks: longest retry delay."
    )
    task_settle_s: float = Field(
        default=2.0,
        ge=0.0,
        le=300.0,
        description="A restarted background task counts as recovered (the service healthy) after running this "
        "long without failing.",
    )
    task_give_up_s: float = Field(
        default=60.0,
        ge=1.0,
        le=3_600.0,
        description="A background task down (retrying) for longer than this ends the process with exit status 3 "
        "and one error line, so the orchestrator restarts it.",
    )
    stop_timeout_s: float = Field(
        default=20.0,
        ge=1.0,
        le=600.0,
        description="SIGINT/SIGTERM end the process within this long: a stop still running after it is cancelled "
        "(a few seconds before the bound) and the process then exits anyway, with status 0 and one warning line. "
        "Keep it below the orchestrator's grace period (compose stop_grace_period, Kubernetes "
        "terminationGracePeriodSeconds).",
    )
    kafka_unacked_max: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Events a process keeps handed to the Kafka producer and not yet acknowledged (across a broker "
        "pause they are retried, never dropped); past it a publish waits for room (counted).",
    )
    kafka_publish_attempt_ms: int = Field(
        default=10_000,
        ge=1_000,
        le=300_000,
        description="How long one Kafka delivery attempt may take before the event is sent again (event ids are "
        "stable, so a resend is deduplicated downstream).",
    )
    retention_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        le=10 * 365 * 24 * 3600,
        description="How long a session's data is kept: Redis keys (live state, summary, privacy policy, publish "
        "epochs, inference snapshots) expire after it, Kafka topics are created with retention.ms of it (and "
        "existing ones adapted by the aggregator), the gateway forgets sessions idle for longer.",
    )
    aggregate_only: bool = Field(
        default=False,
        description="Every session is aggregate-only: no per-student rows leave the aggregator, live feeds and REST "
        "show class figures only (a session can also be switched with PUT /api/sessions/{s}/privacy).",
    )
    privacy_refresh_s: float = Field(
        default=1.0,
        ge=0.05,
        le=60.0,
        description="Distributed mode: how often ingest, inference and gateways re-read a session's privacy policy "
        "from Redis (an opt-out takes effect within this long on other processes; at once in embedded mode).",
    )

    @model_validator(mode="after")
    def _distinct_key_ids(self) -> CommonSettings:
        ring = self.token_keyring()
        if ring.previous is not None and ring.previous.key_id == ring.current.key_id:
            raise ValueError("the previous token key needs its own key id (CLASSPULSE_TOKEN_KEY_ID_PREVIOUS)")
        return self

    def token_keyring(self) -> Keyring:
        """The signing key, the previous one (rotation) and the lifetime bound, as tokens are checked."""
        from shared.tokens import Keyring, TokenKey, key_id_of

        secret = self.token_secret.get_secret_value()
        old = self.token_secret_previous.get_secret_value()
        current = TokenKey(self.token_key_id or key_id_of(secret), secret)
        previous = TokenKey(self.token_key_id_previous or key_id_of(old), old) if old else None
        return Keyring(
            current=current, previous=previous, max_ttl_s=self.token_max_ttl_s, revoked_before=self.token_revoked_before
        )
