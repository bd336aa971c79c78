"""The brain's faust consumer reads read_committed (streams/committed.py): an aborted results
transaction (a fenced or crashed sender) must not be applied beside its committed retry."""
from __future__ import annotations

import inspect

import aiokafka
import faust

from kmta.config import Config
from kmta.pipeline.kafkaio import client_options
from streams import committed
from streams.app import app_options, faust_credentials


def _app(tmp_path) -> faust.App:
    config = Config()
    return faust.App("u.brain", broker_credentials=faust_credentials(config),
                     **app_options(config, str(tmp_path)))


async def test_the_consumer_faust_creates_for_the_app_reads_committed(tmp_path) -> None:
    app = _app(tmp_path)
    committed.install(app)
    thread = app.consumer._thread
    assert isinstance(thread, committed.CommittedConsumerThread)
    consumer = thread._create_worker_consumer(app.transport)
    # without the transport faust reads uncommitted (exactly_once is off): what this guards
    plain_app = _app(tmp_path / "plain")
    plain = plain_app.consumer._thread._create_worker_consumer(plain_app.transport)
    try:
        assert consumer._isolation_level == "read_committed"
        assert plain._isolation_level == "read_uncommitted"
    finally:
        await consumer.stop()
        await plain.stop()
        thread.thread_loop.close()  # made by mode's ServiceThread, never started here
        plain_app.consumer._thread.thread_loop.close()


async def test_aiokafka_still_keeps_isolation_level_where_committed_sets_it() -> None:
    # committed.py sets aiokafka's private attribute before start(); this fails if an upgrade
    # stores the constructor's value elsewhere or start() stops handing it to the Fetcher
    consumer = aiokafka.AIOKafkaConsumer(isolation_level="read_committed",
                                         **client_options(Config()))
    await consumer.stop()
    assert consumer._isolation_level == "read_committed"
    assert "isolation_level=self._isolation_level" in inspect.getsource(
        aiokafka.AIOKafkaConsumer.start)
