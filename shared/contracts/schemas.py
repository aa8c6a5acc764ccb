"""JSON Schema for every event topic and every public document (report attendance, webhook payload),
generated from the contracts (committed under deploy/schemas)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from shared.contracts.attendance import Attendance
from shared.contracts.topics import EVENT_TOPICS
from shared.contracts.webhooks import WebhookPayload

DOCUMENTS: dict[str, type[BaseModel]] = {
    "classpulse.attendance": Attendance,
    "classpulse.webhook": WebhookPayload,
}
"""Documents that are no topic's messages: name -> model (versioned by its ``schema_version``)."""


def _schema(name: str, model: type[BaseModel]) -> dict[str, object]:
    schema = model.model_json_schema()
    schema["$id"] = f"https://classpulse.dev/schemas/{name}.json"
    schema["description"] = (model.__doc__ or "").strip()
    return schema


def topic_schemas() -> dict[str, dict[str, object]]:
    """Topic name -> JSON Schema of the model it carries."""
    return {topic.name: _schema(topic.name, topic.model) for topic in EVENT_TOPICS}


def document_schemas() -> dict[str, dict[str, object]]:
    """Document name -> JSON Schema (attendance, webhook payload)."""
    return {name: _schema(name, model) for name, model in DOCUMENTS.items()}


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in {**topic_schemas(), **document_schemas()}.items():
        path = folder / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
