"""The brain's Kafka transport: faust's aiokafka driver, but its worker consumer reads
``read_committed``.

faust gives its worker consumer ``isolation_level="read_uncommitted"`` unless
``processing_guarantee="exactly_once"`` (which also makes faust's producer transactional, which
the brain does not want). The senders write results in transactions: an aborted one (a sender
fenced or crashed) is written again at another offset, so a read_uncommitted brain would apply
the outcome twice. Every other results reader in kmta reads committed; so does this one.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

ISOLATION = "read_committed"


class CommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the constructor's isolation_level as this private string and hands it
        # to its Fetcher in start(); faust builds the consumer (not started yet) with every
        # other setting, so this is the one place to change it. tests/unit/test_committed.py
        # fails if an upgrade renames the attribute or stops honouring it.
        consumer._isolation_level = ISOLATION
        return consumer


class CommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return CommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = CommittedConsumer


def install(app: Any) -> None:
    """Give ``app`` the read_committed transport, built as faust builds its own
    (``App._new_transport``)."""
    app.transport = Transport(app.conf.broker_consumer, app)
