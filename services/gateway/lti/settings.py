"""LTI 1.3 tool settings (``CLASSPULSE_LTI_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StrictSettings, register_settings


@register_settings
class LtiSettings(StrictSettings):
    """Launching ClassPulse from an LMS with LTI 1.3 (off until a platform is registered)."""

    model_config = SettingsConfigDict(env_prefix="CLASSPULSE_LTI_", extra="forbid", case_sensitive=False)

    platforms_file: Path | None = Field(
        default=None,
        description="JSON file of registered LTI 1.3 platforms (issuer, client_id, auth_login_url, jwks_url, "
        "deployment_ids); unset: the /lti routes answer 404.",
    )
    tool_url: str = Field(
        default="",
        max_length=500,
        description="Public base URL of this gateway as registered on the platform (e.g. https://pulse.school.edu); "
        "empty: taken from each request.",
    )
    join_url: str = Field(
        default="/join",
        max_length=500,
        description="Where learners land (the ingest service's join page); relative to tool_url or absolute.",
    )
    dashboard_url: str = Field(
        default="/dashboard", max_length=500, description="Where instructors land (the teacher dashboard)."
    )
    token_ttl_s: float = Field(
        default=4 * 3600.0, gt=60.0, le=24 * 3600.0, description="Lifetime of the ClassPulse token a launch gives."
    )
    state_ttl_s: float = Field(
        default=600.0, ge=30.0, le=3600.0, description="Seconds between login initiation and launch."
    )
    clock_leeway_s: float = Field(
        default=60.0, ge=0.0, le=600.0, description="Clock skew allowed on the id_token's exp/iat."
    )
