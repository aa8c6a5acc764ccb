"""docs/settings.md is the generated settings reference: it must match the settings models."""

from __future__ import annotations

import pytest

from services.settings_doc import DOC_PATH, REGENERATE, render, settings_classes
from shared.settings import env_names

pytestmark = pytest.mark.unit


def test_committed_settings_reference_matches_the_models() -> None:
    assert DOC_PATH.read_text() == render(), f"{DOC_PATH} is out of date; regenerate it with `{REGENERATE}`"


def test_reference_lists_every_variable_and_hides_secrets() -> None:
    text = render()
    for cls in settings_classes():
        for name in env_names(cls):
            assert f"| `{name}` |" in text, name
    assert "CLASSPULSE_INFERENCE_BACKEND" in text and "CLASSPULSE_REPLAY_PERCEPTION_AHEAD" in text
    assert "classpulse-dev-secret" not in text and "redis://" not in text
