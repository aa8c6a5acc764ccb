"""Commands that belong to no single service: tokens, config check, schemas."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("token", help="print a signed bearer token scoped to one session, participant and role")
    p.add_argument("--session", required=True)
    p.add_argument("--participant", default="*", help="participant id (publishers); viewers and platforms leave '*'")
    p.add_argument("--role", required=True, choices=["student", "teacher", "viewer", "platform"],
                   help="platform: the classroom product's backend, posts interactions for anyone in the session")
    p.add_argument("--ttl", type=float, default=12 * 3600, help="validity in seconds (default 12 h)")
    p.set_defaults(handler=_token)

    p = sub.add_parser("check-config", help="validate every CLASSPULSE_* setting and print the effective config")
    p.set_defaults(handler=_check_config)

    p = sub.add_parser("schemas", help="write the JSON Schema of every event topic and public document to a folder")
    p.add_argument("--out", type=Path, default=Path("deploy/schemas"))
    p.set_defaults(handler=_schemas)


def _token(args: argparse.Namespace) -> int:
    from shared.settings import CommonSettings
    from shared.tokens import issue_token

    settings = CommonSettings()
    if args.role in ("student", "teacher") and args.participant == "*":
        print("error: --participant is required for student and teacher tokens", file=sys.stderr)
        return 2
    print(
        issue_token(
            secret=settings.token_secret.get_secret_value(),
            session=args.session,
            participant=args.participant,
            role=args.role,
            ttl_s=args.ttl,
        )
    )
    return 0


def _check_config(args: argparse.Namespace) -> int:
    """Check the environment, print every settings class (``services.cli`` registered all before dispatch)."""
    from pydantic import ValidationError

    from shared.settings import SettingsError, check_environment, registered_settings, settings_error_line

    try:
        check_environment()
        effective = {cls.__name__: json.loads(cls().model_dump_json()) for cls in registered_settings()}
        effective["analysis"] = _analysis()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"error: {settings_error_line(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(effective, indent=2))
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
