"""Topic setup on a real Kafka adapts to topics that already exist with other partition counts."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from services.aggregator.settings import AggregatorSettings
from services.aggregator.topics_setup import TopicSetupError, ensure_topics
from shared.contracts.topics import AGGREGATES, LIFECYCLE, SCORES

pytestmark = pytest.mark.integration


async def _counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(topics)}
    finally:
        await admin.close()


async def _create(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, n, 1) for name, n in topics.items()])
    finally:
        await admin.close()
    for _ in range(50):  # metadata reaches every listener a moment after the create
        if await _counts(bootstrap, list(topics)) == topics:
            return
        await asyncio.sleep(0.1)


async def _settled(bootstrap: str, want: dict[str, int]) -> dict[str, int]:
    """The counts once the brokers' metadata shows ``want`` (or what it shows after 5 s)."""
    for _ in range(50):
        got = await _counts(bootstrap, list(want))
        if got == want:
            break
        await asyncio.sleep(0.1)
    return got


def _settings(unique: str) -> AggregatorSettings:
    return AggregatorSettings(topic_prefix=f"t{unique}.", app_id=f"agg-{unique}", partitions=4)


async def test_an_auto_created_smaller_lifecycle_topic_is_grown_to_the_score_count(
    kafka_bootstrap: str, unique: str
) -> None:
    s = _settings(unique)
    scores, lifecycle = s.topic(SCORES.name), s.topic(LIFECYCLE.name)
    await _create(kafka_bootstrap, {scores: 8, lifecycle: 3})  # what broker auto-create left behind
    assert await ensure_topics(bootstrap=kafka_bootstrap, settings=s) == 8
    want = {scores: 8, lifecycle: 8, s.topic(AGGREGATES.name): 8}
    assert await _settled(kafka_bootstrap, want) == want
    assert await ensure_topics(bootstrap=kafka_bootstrap, settings=s) == 8  # a restart: nothing to change


async def test_a_smaller_score_topic_is_grown_too(kafka_bootstrap: str, unique: str) -> None:
    s = _settings(unique)
    scores, lifecycle = s.topic(SCORES.name), s.topic(LIFECYCLE.name)
    await _create(kafka_bootstrap, {scores: 2, lifecycle: 6})
    assert await ensure_topics(bootstrap=kafka_bootstrap, settings=s) == 6
    assert await _settled(kafka_bootstrap, {scores: 6, lifecycle: 6}) == {scores: 6, lifecycle: 6}


async def test_a_consumed_topic_is_left_alone_with_the_one_line_fix(kafka_bootstrap: str, unique: str) -> None:
    s = _settings(unique)
    scores, lifecycle = s.topic(SCORES.name), s.topic(LIFECYCLE.name)
    await _create(kafka_bootstrap, {scores: 8, lifecycle: 3})
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=s.app_id, enable_auto_commit=False)
    await consumer.start()
    try:  # the aggregator ran on the 3-partition layout before: its state depends on it
        tp = TopicPartition(lifecycle, 0)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(0, "")})
    finally:
        await consumer.stop()
    with pytest.raises(TopicSetupError) as err:
        await ensure_topics(bootstrap=kafka_bootstrap, settings=s)
    message = str(err.value)
    assert "\n" not in message and f"{lifecycle} has 3 partitions but {scores} has 8" in message
    assert message.endswith(
        f"kafka-topics.sh --bootstrap-server {kafka_bootstrap} --alter --topic {lifecycle} --partitions 8"
    )
    assert await _counts(kafka_bootstrap, [lifecycle]) == {lifecycle: 3}
