"""The repo-managed Kafka cluster: start, serve aiokafka, survive a dead broker, stop.

Real brokers on 19xxx ports (clear of a developer's broker on 9092), one data dir per test.
The manager's calls block; inside these async tests that only delays the test's own loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from kmta.config import Config, KafkaConfig
from kmta.pipeline.kafkaio import client_options
from ops.kafka import manager
from ops.kafka.cli import default_cache_dir
from ops.kit import wait_for

ONE_BROKER_PORT = 19310
THREE_BROKER_PORT = 19320

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def kafka_libs() -> Path:
    kafka_home = os.environ.get("KAFKA_HOME")
    return manager.ensure_jars(
        default_cache_dir(os.environ), kafka_home=Path(kafka_home) if kafka_home else None
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "kafka"
    yield path
    manager.stop(path)


def plain(bootstrap: str) -> Config:
    return Config(kafka=KafkaConfig(bootstrap_servers=bootstrap))


async def create_topic(bootstrap: str, topic: str, replication: int, min_isr: int) -> None:
    admin = AIOKafkaAdminClient(**client_options(plain(bootstrap)))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 1, replication, topic_configs={"min.insync.replicas": str(min_isr)})]
        )
    finally:
        await admin.close()


async def consume_one(bootstrap: str, topic: str) -> bytes | None:
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(plain(bootstrap)),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
        return record.value
    finally:
        await consumer.stop()


async def produce(bootstrap: str, topic: str, value: bytes, timeout: float) -> None:
    """Send with acks=all, retrying retriable failures until ``timeout`` (broker failover)."""
    producer = AIOKafkaProducer(
        **client_options(plain(bootstrap)), acks="all", request_timeout_ms=15_000
    )
    await producer.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await producer.send_and_wait(topic, value)
                return
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)  # back off before retrying a failed send
    finally:
        await producer.stop()


@pytest.mark.timeout(180)
async def test_single_broker_start_produce_consume_stop(data_dir: Path, kafka_libs: Path) -> None:
    info = manager.start(data_dir, brokers=1, base_port=ONE_BROKER_PORT, libs=kafka_libs)
    assert info.bootstrap_servers == f"127.0.0.1:{ONE_BROKER_PORT}"
    assert [st.running for st in manager.status(data_dir)] == [True]

    topic = f"test-{uuid.uuid4().hex}"
    await create_topic(info.bootstrap_servers, topic, replication=1, min_isr=1)
    await produce(info.bootstrap_servers, topic, b"hello", timeout=30)
    assert await consume_one(info.bootstrap_servers, topic) == b"hello"

    again = manager.start(data_dir, brokers=1, base_port=ONE_BROKER_PORT, libs=kafka_libs)
    assert again.already_running and again.cluster_id == info.cluster_id

    assert manager.stop(data_dir) == [1]
    [node] = manager.status(data_dir)
    assert not node.alive and not node.listening and node.pid is None
    assert not (data_dir / "node-1" / "kafka.pid").exists()
    assert "Kafka Server started" in (data_dir / "node-1" / "logs" / "server.log").read_text()


@pytest.mark.timeout(240)
async def test_three_brokers_accept_acks_all_with_one_broker_killed(
    data_dir: Path, kafka_libs: Path
) -> None:
    info = manager.start(data_dir, brokers=3, base_port=THREE_BROKER_PORT, libs=kafka_libs)
    assert [st.running for st in manager.status(data_dir)] == [True, True, True]
    properties = (data_dir / "node-1" / "server.properties").read_text()
    assert (
        "default.replication.factor=3\n" in properties and "min.insync.replicas=2\n" in properties
    )

    topic = f"test-{uuid.uuid4().hex}"
    await create_topic(info.bootstrap_servers, topic, replication=3, min_isr=2)
    await produce(info.bootstrap_servers, topic, b"before", timeout=30)

    victim = manager.status(data_dir)[2]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: not manager.status(data_dir)[2].alive, 15, "node 3 to die")

    # Two of three replicas remain: enough for min ISR 2 once the controller fences node 3.
    await produce(info.bootstrap_servers, topic, b"after", timeout=90)
    assert await consume_one(info.bootstrap_servers, topic) == b"before"
    assert [st.alive for st in manager.status(data_dir)] == [True, True, False]
    assert sorted(manager.stop(data_dir)) == [1, 2]
