"""JSON Schema for every event topic, generated from the contracts (committed under deploy/schemas)."""

from __future__ import annotations

import json
from pathlib import Path

from shared.contracts.topics import EVENT_TOPICS


def topic_schemas() -> dict[str, dict[str, object]]:
    """Topic name -> JSON Schema of the model it carries."""
    out: dict[str, dict[str, object]] = {}
    for topic in EVENT_TOPICS:
        schema = topic.model.model_json_schema()
        schema["$id"] = f"https://classpulse.dev/schemas/{topic.name}.json"
        schema["description"] = (topic.model.__doc__ or "").strip()
        out[topic.name] = schema
    return out


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in topic_schemas().items():
        path = folder / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
