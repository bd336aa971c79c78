"""A transaction the coordinator fenced (e.g. aborted after a broker failure longer than the
transaction timeout) is written again by a new producer; repeated fencing (a real takeover by
a node of the same name) still stops the node. No broker: fake producers."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced

from kmta.pipeline.fencing import Renewals
from kmta.pipeline.outputs import Out
from senders.checkpoint import Checkpoint


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
    async def transaction(self):
        if self.fenced:
            raise ProducerFenced()
        yield

    async def send(self, topic, value, key=None, partition=None, headers=None):
        self.log.append((topic, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def send_offsets_to_transaction(self, offsets, group):
        self.log.append(("offsets", dict(offsets)))


TP = TopicPartition("kmta.queue", 0)


def checkpoint_with(fenced_producers: int) -> tuple[Checkpoint, list, list[FakeProducer]]:
    written: list = []
    made: list[FakeProducer] = []

    def make() -> FakeProducer:
        made.append(FakeProducer(len(made) < fenced_producers, written))
        return made[-1]
    cp = Checkpoint("kmta.senders", assignment=lambda: {TP}, producer=make())
    cp.new_producer = make
    return cp, written, made


async def test_a_fenced_transaction_is_written_again_by_a_new_producer() -> None:
    cp, written, made = checkpoint_with(fenced_producers=1)
    cp.track(TP, 5)
    cp.write(TP, 5, [Out("kmta.results", b"ev")])
    await cp.flush()
    assert len(made) == 2 and made[0].stopped and made[1].started
    # once, by the new producer, with the commit point it moves
    assert written == [("kmta.results", b"ev"), ("offsets", {TP: (6, written[1][1][TP][1])})]
    assert cp.unwritten == 0 and not cp.pending


async def test_fenced_again_and_again_stops_the_node() -> None:
    cp, written, made = checkpoint_with(fenced_producers=99)
    cp.track(TP, 5)
    cp.write(TP, 5, [Out("kmta.results", b"ev")])
    with pytest.raises(ProducerFenced):
        await cp.flush()
    assert len(made) == 1 + Renewals.LIMIT and written == []


def test_renewals_are_limited_per_window() -> None:
    r = Renewals()
    assert [r.allow(t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert r.allow(Renewals.WINDOW + 0.5)  # the first one left the window


async def test_renewed_closes_a_new_producer_whose_start_failed() -> None:
    """While the cluster recovers a new producer's start fails: it is closed before the next
    one is made (left open, its client would leak), and the fenced one is closed first."""
    from kmta.pipeline.fencing import renewed

    class P:
        def __init__(self, fails: bool) -> None:
            self.fails, self.stopped = fails, False

        async def start(self) -> None:
            if self.fails:
                raise ConnectionError("cluster recovering")

        async def stop(self) -> None:
            self.stopped = True
    fenced, made = P(False), [P(True), P(False)]
    queue = list(made)
    got = await renewed(fenced, lambda: queue.pop(0), retry_after=0.0)
    assert got is made[1] and fenced.stopped and made[0].stopped and not made[1].stopped
