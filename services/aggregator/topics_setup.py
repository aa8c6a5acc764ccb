"""Make sure the aggregator's topics exist, co-partitioned, before a worker starts."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from services.aggregator.settings import AggregatorSettings
from shared.contracts.topics import AGGREGATES, ALERTS, INTERACTIONS, LIFECYCLE, SCORES
from shared.log import get_logger

_log = get_logger(__name__)


class TopicSetupError(RuntimeError):
    """The topics cannot be used as they are (message says what to do)."""


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> int | None:
    for desc in await admin.describe_topics([topic]):
        if desc.get("topic") == topic and not desc.get("error_code") and desc.get("partitions"):
            return len(desc["partitions"])
    return None


async def ensure_topics(*, bootstrap: str, settings: AggregatorSettings) -> int:
    """Create missing input/output topics; return the partition count the worker must use.

    Scores and lifecycle must have the same number of partitions (the state table is
    co-partitioned with them); an existing score topic decides the count. Interactions are
    created with the same count (keyed by session, so they can join the session state later).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{settings.app_id}-setup")
    try:
        await admin.start()
    except KafkaError as exc:
        raise TopicSetupError(f"cannot reach Kafka at {bootstrap}: {exc}; check CLASSPULSE_KAFKA_BOOTSTRAP") from exc
    try:
        scores, lifecycle = settings.topic(SCORES.name), settings.topic(LIFECYCLE.name)
        existing = set(await admin.list_topics())
        partitions = settings.partitions
        if scores in existing:
            partitions = await _partitions(admin, scores) or partitions
        for other in (lifecycle, settings.topic(INTERACTIONS.name)):  # co-partitioned inputs
            found = await _partitions(admin, other) if other in existing else None
            if found is not None and found != partitions:
                raise TopicSetupError(
                    f"topic {other} has {found} partitions but {scores} has {partitions}; "
                    "they must match (recreate one of them with the other's count)"
                )
        wanted = [scores, lifecycle, settings.topic(AGGREGATES.name), settings.topic(ALERTS.name),
                  settings.topic(INTERACTIONS.name)]
        missing = [NewTopic(name, partitions, settings.replicas) for name in wanted if name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            _log.info("aggregator topics %s -> %s", "missing", "created", extra={"topics": [t.name for t in missing],
                                                                                  "partitions": partitions})
        return partitions
    finally:
        await admin.close()
