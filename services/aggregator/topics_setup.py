"""Make sure the aggregator's topics exist, co-partitioned, before a worker starts.

Scores and lifecycle must have the same partition count (the session table is co-partitioned
with both: a session's scores and lifecycle events land on the same partition number). Topics
that already exist are adapted when that is safe:

* the larger count of the two existing input topics wins (a count can only grow);
* the smaller topic gets partitions added when this aggregator (its consumer group) never
  committed an offset on it, so no window state was built from its old layout (the usual case:
  the broker auto-created ``classpulse.lifecycle`` with its default count before the first
  aggregator start);
* otherwise the start is refused with the one command that fixes it (to run between classes:
  adding partitions moves sessions to other partitions).
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from services.aggregator.settings import AggregatorSettings
from services.aggregator.topic_retention import adapt_retention, topic_configs
from shared.contracts.topics import AGGREGATES, ALERTS, INTERACTIONS, LIFECYCLE, PRIVACY, SCORES
from shared.log import get_logger

_log = get_logger(__name__)


class TopicSetupError(RuntimeError):
    """The topics cannot be used as they are (message says what to do)."""


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> int | None:
    for desc in await admin.describe_topics([topic]):
        if desc.get("topic") == topic and not desc.get("error_code") and desc.get("partitions"):
            return len(desc["partitions"])
    return None


async def _consumed(admin: AIOKafkaAdminClient, group: str, topic: str) -> bool:
    """Whether ``group`` committed an offset on ``topic`` (its state depends on the topic's layout)."""
    offsets = await admin.list_consumer_group_offsets(group)
    return any(tp.topic == topic and meta.offset >= 0 for tp, meta in offsets.items())


def fix_command(bootstrap: str, topic: str, partitions: int) -> str:
    """The one line that gives ``topic`` ``partitions`` partitions."""
    return f"kafka-topics.sh --bootstrap-server {bootstrap} --alter --topic {topic} --partitions {partitions}"


async def _co_partition(
    admin: AIOKafkaAdminClient, *, bootstrap: str, group: str, counts: dict[str, int]
) -> int:
    """Grow the smaller of the existing input topics to the larger count; the count to use."""
    target = max(counts.values())
    for topic, found in counts.items():
        if found == target:
            continue
        others = ", ".join(f"{t} has {n}" for t, n in counts.items() if t != topic)
        if await _consumed(admin, group, topic):
            raise TopicSetupError(
                f"topic {topic} has {found} partitions but {others}; they must match and this aggregator "
                f"already consumed {topic}, so it is not changed automatically; between classes run: "
                + fix_command(bootstrap, topic, target)
            )
        await admin.create_partitions({topic: NewPartitions(total_count=target)})
        _log.warning("topic partitions %d -> %d (co-partitioned with the other input)", found, target,
                     extra={"topic": topic})
    return target


async def ensure_topics(*, bootstrap: str, settings: AggregatorSettings, retention_s: int | None = None) -> int:
    """Create missing input/output topics, co-partition existing inputs; return the partition count to use.

    With no input topic yet, ``settings.partitions`` decides. Interactions and privacy changes are
    created with the same count (keyed by session, they join the session state). ``retention_s``
    (``CLASSPULSE_RETENTION_S``): new topics get it as ``retention.ms``, existing ones are altered to it.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{settings.app_id}-setup")
    try:
        await admin.start()
    except KafkaError as exc:
        raise TopicSetupError(f"cannot reach Kafka at {bootstrap}: {exc}; check CLASSPULSE_KAFKA_BOOTSTRAP") from exc
    try:
        scores, lifecycle = settings.topic(SCORES.name), settings.topic(LIFECYCLE.name)
        existing = set(await admin.list_topics())
        privacy = settings.topic(PRIVACY.name)
        inputs = (scores, lifecycle, settings.topic(INTERACTIONS.name), privacy)  # co-partitioned by session
        counts = {t: n for t in inputs if t in existing and (n := await _partitions(admin, t))}
        partitions = settings.partitions
        if counts:
            try:
                partitions = await _co_partition(admin, bootstrap=bootstrap, group=settings.app_id, counts=counts)
            except KafkaError as exc:
                raise TopicSetupError(
                    f"cannot co-partition {', '.join(counts)} ({type(exc).__name__}); run: "
                    + "; ".join(fix_command(bootstrap, t, max(counts.values())) for t in counts)
                ) from exc
        wanted = [scores, lifecycle, settings.topic(AGGREGATES.name), settings.topic(ALERTS.name),
                  settings.topic(INTERACTIONS.name), privacy]
        configs = topic_configs(retention_s) if retention_s is not None else None
        missing = [NewTopic(name, partitions, settings.replicas, topic_configs=configs)
                   for name in wanted if name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            _log.info("aggregator topics %s -> %s", "missing", "created", extra={"topics": [t.name for t in missing],
                                                                                  "partitions": partitions})
        present = [name for name in wanted if name in existing]
        if retention_s is not None and present:
            try:
                await adapt_retention(admin, present, retention_s)
            except KafkaError as exc:
                raise TopicSetupError(
                    f"cannot set retention.ms on {', '.join(present)} ({type(exc).__name__}); run: kafka-configs.sh "
                    f"--bootstrap-server {bootstrap} --alter --entity-type topics --entity-name <topic> "
                    f"--add-config retention.ms={retention_s * 1000}"
                ) from exc
        return partitions
    finally:
        await admin.close()
