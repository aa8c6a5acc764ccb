"""Registered LTI 1.3 platforms: who may launch ClassPulse, and where their keys are.

The registry is a JSON file (``CLASSPULSE_LTI_PLATFORMS_FILE``)::

    {"platforms": [{"issuer": "https://canvas.instructure.com", "client_id": "10000000000042",
                    "auth_login_url": "https://sso.canvaslms.com/api/lti/authorize_redirect",
                    "jwks_url": "https://sso.canvaslms.com/api/lti/security/jwks",
                    "deployment_ids": ["1:abc"], "sessions": {"<context id>": "algebra-1"}}]}

``sessions`` optionally names the ClassPulse session of a course (LTI context id) or of one
placement (resource link id); without an entry a stable pseudonymous id is derived.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class LtiConfigError(Exception):
    """The platforms file cannot be used; the message is one line saying what to fix."""


class LtiPlatform(BaseModel):
    """One platform registration (issuer + client id), as the LMS administrator set it up."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(min_length=1, max_length=500)
    client_id: str = Field(min_length=1, max_length=500)
    auth_login_url: str = Field(pattern=r"^https?://", max_length=1000)
    jwks_url: str = Field(pattern=r"^https?://", max_length=1000)
    deployment_ids: list[str] = Field(min_length=1, description="Deployments of the tool on this platform.")
    sessions: dict[str, str] = Field(
        default_factory=dict, description="LTI context id or resource link id -> ClassPulse session id."
    )


class LtiRegistry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platforms: list[LtiPlatform] = Field(default_factory=list)

    def find(self, issuer: str, client_id: str | None) -> LtiPlatform | None:
        """The registration of ``issuer`` (and ``client_id`` when the platform sends one)."""
        matches = [p for p in self.platforms if p.issuer == issuer and client_id in (None, p.client_id)]
        return matches[0] if len(matches) == 1 or (matches and client_id) else None


def load_registry(path: Path) -> LtiRegistry:
    """Read and check the platforms file; raises :class:`LtiConfigError` with one line."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LtiConfigError(f"cannot read LTI platforms file {path}: {exc.strerror}; set CLASSPULSE_LTI_PLATFORMS_FILE"
                             " to a readable JSON file") from None
    try:
        registry = LtiRegistry.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise LtiConfigError(f"LTI platforms file {path} is not JSON (line {exc.lineno}): fix its syntax") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise LtiConfigError(f"LTI platforms file {path}: {where}: {first['msg']}") from None
    seen: set[tuple[str, str]] = set()
    for platform in registry.platforms:
        key = (platform.issuer, platform.client_id)
        if key in seen:
            raise LtiConfigError(f"LTI platforms file {path}: {platform.issuer} / {platform.client_id} is listed twice")
        seen.add(key)
    return registry
