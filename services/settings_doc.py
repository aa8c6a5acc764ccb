"""docs/settings.md, generated from the settings models (never edited by hand).

``python -m services.settings_doc`` rewrites it; ``--check`` exits 1 when the committed file
differs (tests/unit/test_docs_settings.py does the same). Every registered settings class gives
one table: variable, type, default (secrets hidden), bounds and the field's description.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python
from pydantic_settings import BaseSettings

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
REGENERATE = "python -m services.settings_doc"

_HEADER = f"""# Settings reference

<!-- Generated from the settings models by `{REGENERATE}`; do not edit by hand. -->

Every setting is an environment variable `CLASSPULSE_*`. An unknown `CLASSPULSE_*` variable is an
error (with a "did you mean" hint), so a typo never falls back to a default silently; every service
checks against all of them, so one env file can serve every service. `classpulse check-config`
validates the environment and prints the effective configuration, secrets hidden. Variables starting
`CLASSPULSE_TEST_` or `CLASSPULSE_LOCAL_` are reserved for the test harness and local service scripts.
Booleans accept `true`/`false` (also `1`/`0`), lists are JSON (`[1, 10, 60]`). A command-line option
overrides its setting where both exist: `--host`/`--port` (gateway, ingest, up), `--workers` (ingest),
`--metrics-port` (inference, aggregator).
"""


def settings_classes() -> list[type[BaseSettings]]:
    """Every registered settings class, common settings first, then by prefix."""
    from services.cli import register_all_settings
    from shared.settings import registered_settings

    register_all_settings()
    return sorted(registered_settings(), key=lambda cls: str(cls.model_config.get("env_prefix", "")))


def _type(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type(a) for a in get_args(tp))
    if tp is SecretStr:
        return "secret"
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type(a) for a in get_args(tp))}]"
    if tp is type(None):
        return "none"
    return str(getattr(tp, "__name__", tp))


def _default(field: FieldInfo) -> str:
    if field.annotation is SecretStr:
        return "(hidden)"
    if field.default_factory is not None:
        return "(computed)"
    value = field.default
    if value is PydanticUndefined:
        return "(required)"
    if value == "":
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f"`{value}`"
    return f"`{json.dumps(to_jsonable_python(value))}`"


_BOUNDS: tuple[tuple[type[Any], str, str], ...] = (
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.MinLen, "min_length", "length >="),
    (annotated_types.MaxLen, "max_length", "length <="),
)


def _bounds(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for kind, attr, sign in _BOUNDS:
            if isinstance(item, kind):
                parts.append(f"{sign} {getattr(item, attr)}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The whole of docs/settings.md."""
    out = [_HEADER]
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        out.append(f"## `{prefix}*` ({cls.__module__}.{cls.__name__})\n")
        if doc:
            out.append(doc.replace("``", "`") + "\n")
        out.append("| variable | type | default | bounds | description |")
        out.append("|---|---|---|---|---|")
        for name, field in cls.model_fields.items():
            out.append(
                f"| `{(prefix + name).upper()}` | {_type(field.annotation)} | {_default(field)} "
                f"| {_bounds(field)} | {_cell(field.description or '')} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.settings_doc", description=__doc__)
    parser.add_argument("--out", type=Path, default=DOC_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} is out of date; run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
