"""Topics take the largest record kmta writes (kmta.pipeline.kafkaio.record_limit), on the real broker
whose own default (message.max.bytes, 1 MiB) would refuse it."""
from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from kmta.config import Config
from kmta.pipeline.kafkaio import (
    FETCH,
    FETCH_MAX_BYTES,
    client_options,
    ensure_topics,
    make_producer,
    record_limit,
)
from tests.kafka_batches import LZ4, NONE, read_values, stored_codecs

pytestmark = pytest.mark.integration


async def _settings(config: Config, topic: str) -> dict[str, str]:
    """The topic's settings as the broker applies them."""
    admin = AIOKafkaAdminClient(**client_options(config))
    await admin.start()
    try:
        resp = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {e[0]: e[1] for r in resp for res in r.resources for e in res[4]}
    finally:
        await admin.close()


async def _limits(config: Config, topics: list[str]) -> dict[str, int]:
    return {t: int((await _settings(config, t))["max.message.bytes"]) for t in topics}


async def test_a_message_of_the_maximum_size_fits_every_topic(kafka_bootstrap: str) -> None:
    config = Config.model_validate({
        "kafka": {"bootstrap_servers": kafka_bootstrap,
                  "topic_prefix": f"sz{uuid.uuid4().hex[:8]}.",
                  "partitions": 1, "queue_partitions": 1, "delay_tiers": [1]},
        "delivery": {"max_message_bytes": 2 * 1024 * 1024}})
    await ensure_topics(config)
    limit = record_limit(config)
    entries = await _settings(config, config.topic("queue"))
    assert int(entries["max.message.bytes"]) == limit

    # an envelope-like record near the limit: short lines, CRLF escaped in JSON
    value = b'{"data":"' + b"x\\r\\n" * ((limit - 65536) // 5) + b'"}'
    assert 1024 * 1024 < len(value) <= limit
    producer = make_producer(config)
    await producer.start()
    try:
        await producer.send_and_wait(config.topic("queue"), value, key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(config.topic("queue"), **client_options(config), group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        got = await consumer.getone()
    finally:
        await consumer.stop()
    assert got.value == value


async def test_records_larger_than_the_fetch_bounds_still_arrive(kafka_bootstrap: str) -> None:
    """The consumers' fetch bounds (``FETCH``) are smaller than the largest record: such a
    record, behind and between small ones on other partitions, still arrives, and nothing is
    skipped (aiokafka skips an offset it reads as too large for its fetch size)."""
    config = Config.model_validate({
        "kafka": {"bootstrap_servers": kafka_bootstrap,
                  "topic_prefix": f"sz{uuid.uuid4().hex[:8]}.",
                  "partitions": 1, "queue_partitions": 4, "delay_tiers": [1]},
        "delivery": {"max_message_bytes": 2 * 1024 * 1024}})
    await ensure_topics(config)
    topic = config.topic("queue")
    big = os.urandom(FETCH_MAX_BYTES + 512 * 1024)  # incompressible: larger than both bounds
    sent: dict[int, list[bytes]] = {p: [] for p in range(4)}
    producer = make_producer(config)
    await producer.start()
    try:
        for i in range(600):
            p = 1 + i % 3
            sent[p].append(f"small-{i}-".encode() + os.urandom(2000))
            await producer.send(topic, sent[p][-1], partition=p)
        for p in (0, 2):
            sent[p].append(big)
            await producer.send(topic, big, partition=p)
        sent[2].append(b"after the big one")
        await producer.send_and_wait(topic, sent[2][-1], partition=2)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **client_options(config), group_id=None,
                                auto_offset_reset="earliest", **FETCH)
    got: dict[int, list[bytes]] = {p: [] for p in range(4)}
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while sum(map(len, got.values())) < sum(map(len, sent.values())):
            assert loop.time() < deadline, {p: len(v) for p, v in got.items()}
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                got[tp.partition] += [r.value for r in records]
    finally:
        await consumer.stop()
    assert got == sent


async def test_existing_topics_with_a_lower_limit_are_raised_at_start(
        kafka_bootstrap: str) -> None:
    config = Config.model_validate({
        "kafka": {"bootstrap_servers": kafka_bootstrap,
                  "topic_prefix": f"sz{uuid.uuid4().hex[:8]}.",
                  "partitions": 1, "queue_partitions": 1, "delay_tiers": [1]},
        "delivery": {"max_message_bytes": 2 * 1024 * 1024}})
    limit = record_limit(config)
    # made by hand (or by an older kmta): the broker's default, and one larger than kmta's
    admin = AIOKafkaAdminClient(**client_options(config))
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(config.topic("queue"), 1, 1),
            NewTopic(config.topic("delay.1s"), 1, 1,
                     topic_configs={"max.message.bytes": "1000", "retention.ms": "7200000"}),
            NewTopic(config.topic("outbox"), 1, 1,
                     topic_configs={"max.message.bytes": str(limit * 2)})])
    finally:
        await admin.close()
    before = await _limits(config, [config.topic("queue")])
    assert before[config.topic("queue")] < limit
    await ensure_topics(config)
    after = await _limits(config, [config.topic(t) for t in ("queue", "delay.1s", "outbox")])
    assert after == {config.topic("queue"): limit, config.topic("delay.1s"): limit,
                     config.topic("outbox"): limit * 2}  # a larger one is kept
    # the other settings are left as they were (an incremental change)
    assert (await _settings(config, config.topic("delay.1s")))["retention.ms"] == "7200000"
    await ensure_topics(config)  # nothing left to raise: idempotent
    assert await _limits(config, [config.topic("queue")]) == {config.topic("queue"): limit}


async def test_batches_are_stored_as_the_producer_compressed_them(kafka_bootstrap: str) -> None:
    config = Config.model_validate({
        "kafka": {"bootstrap_servers": kafka_bootstrap,
                  "topic_prefix": f"sz{uuid.uuid4().hex[:8]}.",
                  "partitions": 1, "queue_partitions": 1, "delay_tiers": [1]}})
    await ensure_topics(config)
    topic = config.topic("queue")
    value = b"Subject: x\r\n\r\n" + b"The quick brown fox jumps over the lazy dog.\r\n" * 2000
    for codec in ("lz4", "none"):
        producer = make_producer(config.model_copy(update={"kafka": config.kafka.model_copy(
            update={"compression": codec})}))
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=b"k")
        finally:
            await producer.stop()
    assert await stored_codecs(config, topic) == [LZ4, NONE]
    assert await read_values(config, topic) == [value, value]
