"""Commands that belong to no single service: tokens, config check, schemas."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("token", help="print a signed bearer token (JWT) scoped to one session, participant and role")
    p.add_argument("--session", required=True)
    p.add_argument("--participant", default="*", help="participant id (publishers); viewers and platforms leave '*'")
    p.add_argument("--role", required=True, choices=["student", "teacher", "viewer", "platform"],
                   help="platform: the classroom product's backend, posts interactions for anyone in the session")
    p.add_argument("--ttl", type=float, default=12 * 3600,
                   help="validity in seconds (default 12 h; at most CLASSPULSE_TOKEN_MAX_TTL_S, default 24 h)")
    p.set_defaults(handler=_token)

    p = sub.add_parser("check-config", help="validate every CLASSPULSE_* setting and print the effective config")
    p.set_defaults(handler=_check_config)

    p = sub.add_parser("schemas", help="write the JSON Schema of every event topic and public document to a folder")
    p.add_argument("--out", type=Path, default=Path("deploy/schemas"))
    p.set_defaults(handler=_schemas)


def _token(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from shared.settings import CommonSettings, SettingsError, check_environment, settings_error_line
    from shared.tokens import issue_token

    try:
        check_environment()
        settings = CommonSettings()
    except SettingsError as exc:
        return _error(str(exc))
    except ValidationError as exc:
        return _error(settings_error_line(exc))
    if args.role in ("student", "teacher") and args.participant == "*":
        return _error("--participant is required for student and teacher tokens")
    if not args.ttl >= 1:
        return _error("--ttl must be at least 1 second")
    try:
        token = issue_token(
            secret=settings.token_keyring(),
            session=args.session,
            participant=args.participant,
            role=args.role,
            ttl_s=args.ttl,
        )
    except ValueError as exc:
        return _error(f"{exc}; choose a shorter --ttl")
    print(token)
    return 0


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _check_config(args: argparse.Namespace) -> int:
    """Check the environment, print every settings class (``services.cli`` registered all before dispatch),
    then one line on the token keys (their ids, whether the secret is the development one; never a secret)."""
    from pydantic import ValidationError

    from shared.security import secret_weakness
    from shared.settings import (
        CommonSettings,
        SettingsError,
        check_environment,
        registered_settings,
        settings_error_line,
    )

    try:
        check_environment()
        effective = {cls.__name__: json.loads(cls().model_dump_json()) for cls in registered_settings()}
        effective["analysis"] = _analysis()
        common = CommonSettings()
    except SettingsError as exc:
        return _error(str(exc))
    except ValidationError as exc:
        return _error(settings_error_line(exc))
    ring = common.token_keyring()
    weakness = secret_weakness(common)
    effective["tokens"] = {
        "signing_key_id": ring.current.key_id,
        "accepted_key_ids": list(ring.key_ids),
        "max_ttl_s": ring.max_ttl_s,
        "development_secret": weakness is not None and "development" in weakness,
        "secret_ok_beyond_loopback": weakness is None,
    }
    print(json.dumps(effective, indent=2))
    if weakness is not None:
        print(f"warning: {weakness}; services bound beyond loopback will refuse to start", file=sys.stderr)
    return 0


def _analysis() -> dict[str, str]:
    """The inference workers' perception backend and device (``CLASSPULSE_INFERENCE_BACKEND`` / ``_DEVICE``)."""
    from services.inference.perception_registry import analysis_for
    from services.inference.settings import InferenceSettings

    return analysis_for(InferenceSettings()).model_dump()


def _schemas(args: argparse.Namespace) -> int:
    from shared.contracts.schemas import write_schemas

    for path in write_schemas(args.out):
        print(path)
    return 0
