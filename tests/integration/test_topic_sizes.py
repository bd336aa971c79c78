"""Topics take the largest record kmta writes (kmta.pipeline.kafkaio.record_limit), on the real broker
whose own default (message.max.bytes, 1 MiB) would refuse it."""
from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from kmta.config import Config
from kmta.pipeline.kafkaio import client_options, ensure_topics, make_producer, record_limit

pytestmark = pytest.mark.integration


async def test_a_message_of_the_maximum_size_fits_every_topic(kafka_bootstrap: str) -> None:
    config = Config.model_validate({
        "kafka": {"bootstrap_servers": kafka_bootstrap,
                  "topic_prefix": f"sz{uuid.uuid4().hex[:8]}.",
                  "partitions": 1, "queue_partitions": 1, "delay_tiers": [1]},
        "delivery": {"max_message_bytes": 2 * 1024 * 1024}})
    await ensure_topics(config)
    limit = record_limit(config)
    admin = AIOKafkaAdminClient(**client_options(config))
    await admin.start()
    try:
        resp = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, config.topic("queue"))])
        entries = {e[0]: e[1] for r in resp for res in r.resources for e in res[4]}
    finally:
        await admin.close()
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
