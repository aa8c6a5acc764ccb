"""One env file with every service's ``CLASSPULSE_*`` variable: every service's settings check accepts it.

The file is derived from the settings registry (every registered class, every field, its default
written as an environment value would be), so a new setting is covered the day it is declared, and a
setting that cannot be set from the environment at all (an int ``Literal`` read as text) fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

from services.cli import register_all_settings
from shared.settings import registered_settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMMANDS = {
    "ingest": ["ingest"],
    "simulate": ["simulate", "--session", "s1"],
    "gateway": ["gateway"],
    "inference": ["inference"],
    "aggregator": ["aggregator"],
}


def _env_value(value: object) -> str | None:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return None if value is None else str(value)


def write_env_file(path: Path) -> dict[str, str]:
    """Every registered variable at its default, as text, plus the distributed transport."""
    register_all_settings()
    values: dict[str, str] = {}
    for cls in registered_settings():
        defaults = cls()
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name in cls.model_fields:
            text = _env_value(getattr(defaults, name))
            if text is not None:
                values[(prefix + name).upper()] = text
    values["CLASSPULSE_TRANSPORT"] = "distributed"
    path.write_text("".join(f"{k}={v}\n" for k, v in sorted(values.items())))
    return values


def _read_env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def _run(command: list[str], env_file: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLASSPULSE_")} | env_file
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *command, "--check-config"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path = tmp_path_factory.mktemp("env") / "classpulse.env"
    written = write_env_file(path)
    assert len(written) > 100 and {k.split("_")[1] for k in written} >= {"INGEST", "GATEWAY", "INFERENCE"}
    return _read_env_file(path)


def test_every_settings_class_loads_from_the_one_env_file(
    env_file: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env_file.items():
        monkeypatch.setenv(name, value)
    for cls in registered_settings():
        cls()  # e.g. CLASSPULSE_INGEST_VIDEO_JITTER_PACKETS=128 is text: it must still validate


@pytest.mark.parametrize("service", sorted(COMMANDS))
def test_each_service_accepts_the_one_env_file(service: str, env_file: dict[str, str]) -> None:
    done = _run(COMMANDS[service], env_file)
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower()


def test_a_misspelt_variable_is_one_readable_line(env_file: dict[str, str]) -> None:
    done = _run(COMMANDS["ingest"], env_file | {"CLASSPULSE_INGEST_MAX_PUBLISHER": "3"})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "CLASSPULSE_INGEST_MAX_PUBLISHER (did you mean CLASSPULSE_INGEST_MAX_PUBLISHERS?)" in lines[0]


def test_an_invalid_value_is_one_readable_line_naming_the_variable(env_file: dict[str, str]) -> None:
    done = _run(COMMANDS["ingest"], env_file | {"CLASSPULSE_INGEST_VIDEO_JITTER_PACKETS": "100"})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    expect = "error: invalid ClassPulse settings: CLASSPULSE_INGEST_VIDEO_JITTER_PACKETS=100: Input should be 64"
    assert lines[0].startswith(expect)
    secret = _run(COMMANDS["gateway"], env_file | {"CLASSPULSE_MEDIA_SHARDS": "0", "CLASSPULSE_TOKEN_SECRET": "s3"})
    assert secret.returncode == 2 and len(secret.stderr.strip().splitlines()) == 1
    assert "CLASSPULSE_MEDIA_SHARDS='0'" in secret.stderr and "s3" not in secret.stderr
