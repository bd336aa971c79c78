"""The route loop keeps up to DEPTH batches in flight: the next batch is routed and handed to
the producer while the broker acknowledges the last ones, and offsets are committed only once
everything their batch and the batches before it produced is acknowledged; a batch that fails
is read again together with the ones behind it."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata

from streams.ingest import DEPTH, OutboxRoute
from tests.unit.test_router import Harness, msg

P0, P1 = TopicPartition("u.outbox", 0), TopicPartition("u.outbox", 1)


def record(tp: TopicPartition, offset: int) -> SimpleNamespace:
    doc = msg(id=f"m-{tp.partition}-{offset}")
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset,
                           value=json.dumps(doc).encode())


class Consumer:
    """Hands out the scripted batches, then nothing; records commits and seeks."""

    def __init__(self, batches: list[dict], fail_commits: int = 0) -> None:
        self.batches = list(batches)
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.fail_commits = fail_commits

    async def getmany(self, timeout_ms: int = 0) -> dict:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def assignment(self) -> set[TopicPartition]:
        return {P0, P1}

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise CommitFailedError("the group rebalanced")
        self.commits.append(dict(offsets))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


class Producer:
    """Takes records at once; the test acknowledges them when it wants."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, asyncio.Future]] = []

    async def send(self, topic, value, key=None, partition=None):
        fut = asyncio.get_running_loop().create_future()
        self.sent.append((topic, value, key or b"", fut))
        return fut

    def ids_sent(self) -> set[str]:
        return {json.loads(v)["id"] for t, v, _, _ in self.sent if t == "u.results"}

    def ack(self, ids: set[str]) -> None:
        """Acknowledge every record sent so far for messages ``ids``: their queued events and
        queue records (the id in the value) and ids records (the id as the key)."""
        for _, v, k, fut in self.sent:
            if not fut.done() and any(i.encode() in v + k for i in ids):
                fut.set_result(None)


async def until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def route_with(consumer: Consumer, producer: Producer) -> OutboxRoute:
    h = Harness()
    route = OutboxRoute(h.config, h.router, 4)
    route._consumer = consumer  # type: ignore[assignment]
    route._producer = producer
    return route


def test_the_next_batch_is_routed_while_the_last_waits_and_commits_keep_their_order() -> None:
    first = {P0: [record(P0, 0), record(P0, 1)]}
    second = {P0: [record(P0, 2)], P1: [record(P1, 5)]}
    consumer, producer = Consumer([first, second]), Producer()
    route = route_with(consumer, producer)
    ids1, ids2 = {"m-0-0", "m-0-1"}, {"m-0-2", "m-1-5"}

    async def scenario() -> None:
        task = asyncio.create_task(route._run())
        try:
            # nothing acknowledged yet, and the second batch is already on its way
            await until(lambda: producer.ids_sent() == ids1 | ids2, "both batches sent")
            assert consumer.commits == []
            producer.ack(ids2)  # the later batch first: its commit still waits
            await asyncio.sleep(0.01)
            assert consumer.commits == []
            producer.ack(ids1)
            await until(lambda: len(consumer.commits) == 1, "a commit")
        finally:
            route._stopping = True
            await asyncio.wait_for(task, 5)
        assert consumer.commits == [{P0: OffsetAndMetadata(3, ""), P1: OffsetAndMetadata(6, "")}]
        assert route.routed == 4
        assert consumer.seeks == []

    asyncio.run(scenario())


def test_at_most_depth_batches_wait_and_the_oldest_is_committed_alone() -> None:
    batches = [{P0: [record(P0, i)]} for i in range(DEPTH + 1)]
    consumer, producer = Consumer(batches), Producer()
    route = route_with(consumer, producer)

    async def scenario() -> None:
        task = asyncio.create_task(route._run())
        try:
            await until(lambda: len(producer.ids_sent()) == DEPTH, f"{DEPTH} batches sent")
            await asyncio.sleep(0.01)
            assert len(producer.ids_sent()) == DEPTH  # the next one waits for the oldest
            assert consumer.commits == []
            producer.ack({"m-0-0"})
            await until(lambda: len(producer.ids_sent()) == DEPTH + 1, "the last batch sent")
            assert consumer.commits == [{P0: OffsetAndMetadata(1, "")}]
            producer.ack({f"m-0-{i}" for i in range(DEPTH + 1)})
            await until(lambda: consumer.commits[-1] == {P0: OffsetAndMetadata(DEPTH + 1, "")},
                        "the last commit")
        finally:
            route._stopping = True
            await asyncio.wait_for(task, 5)
        points = [c[P0].offset for c in consumer.commits]
        assert points == sorted(points) and points[0] == 1
        assert route.routed == DEPTH + 1

    asyncio.run(scenario())


def test_a_failed_commit_reads_both_batches_again_from_their_first_records() -> None:
    first = {P0: [record(P0, 0), record(P0, 1)]}
    second = {P0: [record(P0, 2)], P1: [record(P1, 5)]}
    consumer, producer = Consumer([first, second], fail_commits=1), Producer()
    route = route_with(consumer, producer)

    async def scenario() -> None:
        task = asyncio.create_task(route._run())
        try:
            await until(lambda: len(producer.ids_sent()) == 4, "both batches sent")
            producer.ack({"m-0-0", "m-0-1", "m-0-2", "m-1-5"})
            await until(lambda: consumer.seeks != [], "a seek")
        finally:
            route._stopping = True
            await asyncio.wait_for(task, 5)
        assert sorted(consumer.seeks) == [(P0, 0), (P1, 5)]
        assert consumer.commits == []  # the second batch is not committed past the first
        assert route.routed == 0

    asyncio.run(scenario())


def test_stopping_writes_and_commits_the_batch_in_flight() -> None:
    consumer, producer = Consumer([{P1: [record(P1, 3)]}]), Producer()
    route = route_with(consumer, producer)

    async def scenario() -> None:
        task = asyncio.create_task(route._run())
        await until(lambda: producer.ids_sent() == {"m-1-3"}, "the batch sent")
        route._stopping = True
        await asyncio.sleep(0.01)
        assert not task.done()  # it waits for the acknowledgements
        producer.ack({"m-1-3"})
        await asyncio.wait_for(task, 5)
        assert consumer.commits == [{P1: OffsetAndMetadata(4, "")}]

    asyncio.run(scenario())
