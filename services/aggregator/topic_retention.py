"""``retention.ms`` of the event topics: read it back, and set it to ``CLASSPULSE_RETENTION_S``.

Topics the aggregator creates get ``retention.ms`` at creation (:func:`topic_configs`); existing
ones (e.g. auto-created by the broker with its default, or made under another retention) are
altered to it at the aggregator's start, with a log line per topic changed. Kafka then deletes
log segments older than that by itself: events cannot be erased from the log one by one, so a
session's erasure (``DELETE /api/sessions/{s}``) reports them as gone "by retention".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.log import get_logger

_log = get_logger(__name__)
RETENTION_MS = "retention.ms"


def topic_configs(retention_s: int) -> dict[str, str]:
    """Configs for a topic created under the retention setting."""
    return {RETENTION_MS: str(int(retention_s) * 1000)}


async def read_retention(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> dict[str, int | None]:
    """``retention.ms`` of each topic (None: not reported)."""
    if not topics:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, t, configs={RETENTION_MS: None}) for t in topics]
    out: dict[str, int | None] = dict.fromkeys(topics)
    for response in await admin.describe_configs(resources):
        resources_out: Any = getattr(response, "resources", [])
        for resource in resources_out:
            name, entries = str(resource[3]), resource[4]
            for entry in entries:
                if entry[0] == RETENTION_MS and entry[1] is not None:
                    out[name] = int(entry[1])
    return out


async def adapt_retention(admin: AIOKafkaAdminClient, topics: Sequence[str], retention_s: int) -> list[str]:
    """Set ``retention.ms`` on the existing ``topics`` that have another value; the topics changed."""
    wanted = int(retention_s) * 1000
    found = await read_retention(admin, topics)
    change = [t for t, ms in found.items() if ms != wanted]
    if change:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t, configs=topic_configs(retention_s)) for t in change]
        )
        for topic in change:
            _log.warning("topic retention.ms %s -> %d (CLASSPULSE_RETENTION_S)", found[topic], wanted,
                         extra={"topic": topic})
    return change
