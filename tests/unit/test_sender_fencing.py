"""A transaction the coordinator fenced (e.g. aborted after a broker failure longer than the
transaction timeout) is written again by a new producer; repeated fencing (a real takeover by
a node of the same name) still stops the node. No broker: fake producers."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced

from kmta.config import Config
from kmta.pipeline.outputs import Out
from kmta.pipeline.rules import partition_map
from kmta.policy.kb import KnowledgeBase
from senders.fencing import Renewals
from senders.node import SenderNode

KB = KnowledgeBase.load()


class FakeProducer:
    def __init__(self, fenced: bool, log: list) -> None:
        self.fenced = fenced
        self.log = log
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    @contextlib.asynccontextmanager
    async def transaction(self):  # noqa: ANN201
        if self.fenced:
            raise ProducerFenced()
        yield

    async def send(self, topic, value, key=None, partition=None):  # noqa: ANN001, ANN201
        self.log.append((topic, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def send_offsets_to_transaction(self, offsets, group):  # noqa: ANN001
        self.log.append(("offsets", dict(offsets)))


def node_with(fenced_producers: int) -> tuple[SenderNode, list, list[FakeProducer]]:
    config = Config.model_validate({})
    node = SenderNode(config, KB, partition_map(config, KB), transport=object(), node="n1")
    written: list = []
    made: list[FakeProducer] = []

    def make() -> FakeProducer:
        made.append(FakeProducer(len(made) < fenced_producers, written))
        return made[-1]
    node._txn_producer = make  # type: ignore[method-assign]
    node.producer = make()
    return node, written, made


async def test_a_fenced_transaction_is_written_again_by_a_new_producer() -> None:
    node, written, made = node_with(fenced_producers=1)
    node._write(TopicPartition(node._queue_topic, 0), 5, [Out("kmta.results", b"ev")])
    await node._flush()
    assert len(made) == 2 and made[0].stopped and made[1].started
    assert written == [("kmta.results", b"ev")]  # once, by the new producer
    assert node.in_flight == 0 and not node._pending


async def test_fenced_again_and_again_stops_the_node() -> None:
    node, written, made = node_with(fenced_producers=99)
    node._write(TopicPartition(node._queue_topic, 0), 5, [Out("kmta.results", b"ev")])
    with pytest.raises(ProducerFenced):
        await node._flush()
    assert len(made) == 1 + Renewals.LIMIT and written == []


def test_renewals_are_limited_per_window() -> None:
    r = Renewals()
    assert [r.allow(t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert r.allow(Renewals.WINDOW + 0.5)  # the first one left the window
