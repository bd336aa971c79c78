"""The route loop's write step, one transaction per batch: a record the broker refuses for
itself is dead-lettered, a cluster error aborts the transaction and it is written again (what
an aborted transaction wrote is never seen: nothing twice), the outbox offsets go with it."""
from __future__ import annotations

import asyncio
import contextlib
import json
from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from aiokafka.structs import OffsetAndMetadata

from kmta.pipeline.outputs import Out
from schemas import DeadLetter
from streams.ingest import OutboxRoute, _Txn
from tests.unit.test_router import Harness


class FlakyProducer:
    """A transactional producer: what a transaction sent is ``written`` (with its offsets in
    ``offsets``) when it commits and dropped when it aborts. Values in ``too_big`` always fail
    as too large; values in ``flaky`` fail once with a connection error."""

    def __init__(self, too_big: set[bytes], flaky: set[bytes]) -> None:
        self.too_big, self.flaky = too_big, set(flaky)
        self.written: list[Out] = []
        self.offsets: list[dict] = []
        self.aborted = 0
        self._staged: list[Out] | None = None
        self._staged_offsets: dict = {}

    @contextlib.asynccontextmanager
    async def transaction(self):
        assert self._staged is None, "one transaction at a time"
        self._staged, self._staged_offsets = [], {}
        try:
            yield
        except BaseException:
            self.aborted += 1
            raise
        else:
            self.written += self._staged
            if self._staged_offsets:
                self.offsets.append(self._staged_offsets)
        finally:
            self._staged = None

    async def send_offsets_to_transaction(self, offsets, group_id):
        assert self._staged is not None
        self._staged_offsets = dict(offsets)

    async def send(self, topic, value, key=None, partition=None, headers=None):
        assert self._staged is not None, "sent outside a transaction"
        fut = asyncio.get_running_loop().create_future()
        if value in self.too_big:
            raise MessageSizeTooLargeError("too large")
        if value in self.flaky:
            self.flaky.discard(value)
            fut.set_exception(KafkaConnectionError("broker went away"))
        else:
            self._staged.append(Out(topic, value, key, partition))
            fut.set_result(None)
        return fut


def txn_of(records: list, routed: list[list[Out]]) -> _Txn:
    """One transaction of these records (SimpleNamespaces), one batch per partition."""
    txn = _Txn(0.0)
    batch: dict = {}
    for r in records:
        batch.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
    txn.add(batch, records, routed)
    return txn


def test_too_large_is_dead_lettered_and_a_cluster_error_retried() -> None:
    h = Harness()
    route = OutboxRoute(h.config, h.router, 4)
    prod = FlakyProducer(too_big={b"BIG"}, flaky={b"flaky"})
    route._producer = prod
    recs = [SimpleNamespace(topic="u.outbox", partition=0, offset=i, value=b'{"x": %d}' % i)
            for i in range(3)]
    routed = [[Out("u.queue", b"ok")], [Out("u.queue", b"BIG")], [Out("u.queue", b"flaky")]]
    assert asyncio.run(route._write(txn_of(recs, routed)))
    values = [o.value for o in prod.written]
    assert values.count(b"ok") == 1 and values.count(b"flaky") == 1  # no second copy
    assert prod.aborted == 1  # both errors in the first transaction: aborted, written again
    # committed once, with the batch that was written: past its last record
    assert prod.offsets == [{TopicPartition("u.outbox", 0): OffsetAndMetadata(3, "")}]
    (dl,) = [DeadLetter.model_validate_json(o.value) for o in prod.written if o.topic == "u.dlq"]
    assert dl.offset == 1 and "MessageSizeTooLargeError" in dl.reason
    assert json.loads(dl.original) == {"x": 1}


def test_a_dead_letter_too_large_itself_goes_without_its_original() -> None:
    h = Harness()
    route = OutboxRoute(h.config, h.router, 4)

    class Refuses(FlakyProducer):
        async def send(self, topic, value, key=None, partition=None, headers=None):
            if topic == "u.dlq" and b"xxxx" in value:
                raise MessageSizeTooLargeError("too large")
            return await super().send(topic, value, key, partition)
    prod = Refuses(too_big={b"BIG"}, flaky=set())
    route._producer = prod
    rec = SimpleNamespace(topic="u.outbox", partition=0, offset=5, value=b"x" * 10_000)
    assert asyncio.run(route._write(txn_of([rec], [[Out("u.queue", b"BIG")]])))
    (dl,) = [DeadLetter.model_validate_json(o.value) for o in prod.written]
    assert dl.original == "" and dl.offset == 5


def test_stopping_while_the_cluster_is_down_gives_the_batch_back() -> None:
    h = Harness()
    route = OutboxRoute(h.config, h.router, 4)

    class Down(FlakyProducer):
        async def send(self, topic, value, key=None, partition=None, headers=None):
            route._stopping = True
            raise KafkaConnectionError("down")
    route._producer = Down(set(), set())
    rec = SimpleNamespace(topic="u.outbox", partition=0, offset=5, value=b"{}")
    assert not asyncio.run(route._write(txn_of([rec], [[Out("u.queue", b"a")]])))
    assert route._producer.written == [] and route._producer.offsets == []


def test_a_batch_of_a_partition_taken_away_does_not_end_the_route_loop() -> None:
    """A rebalance during a batch: commit only what is still owned, and read again only
    there (seeking a partition taken away raises, which ended the loop for good)."""
    from aiokafka.errors import IllegalStateError

    h = Harness()
    route = OutboxRoute(h.config, h.router, 4)
    kept, gone = TopicPartition("u.outbox", 0), TopicPartition("u.outbox", 1)

    class Consumer:
        def __init__(self) -> None:
            self.seeks: list[tuple[TopicPartition, int]] = []

        def assignment(self) -> set[TopicPartition]:
            return {kept}

        def seek(self, tp: TopicPartition, offset: int) -> None:
            if tp != kept:
                raise IllegalStateError(f"No current assignment for partition {tp}")
            self.seeks.append((tp, offset))
    c = Consumer()
    route._consumer = c  # type: ignore[assignment]
    route._reread({kept: 3, gone: 9})
    assert c.seeks == [(kept, 3)]


def test_batches_fetched_meanwhile_join_the_transaction_and_its_retry() -> None:
    """``more`` routes a second batch while the first one's records are acknowledged: both
    are written in one transaction with both partitions' offsets; the first attempt fails, and
    the retry writes both again without asking ``more`` for another."""
    h = Harness()
    route = OutboxRoute(h.config, h.router, 4)
    prod = FlakyProducer(too_big=set(), flaky={b"b1"})
    route._producer = prod
    a = SimpleNamespace(topic="u.outbox", partition=0, offset=7, value=b"{}")
    b = SimpleNamespace(topic="u.outbox", partition=1, offset=40, value=b"{}")
    txn = txn_of([a], [[Out("u.queue", b"a1")]])
    asked = []

    async def more() -> bool:
        asked.append(len(txn.records))
        if len(txn.records) > 1:
            return False
        txn.add({TopicPartition("u.outbox", 1): [b]}, [b], [[Out("u.queue", b"b1")]])
        return True
    assert asyncio.run(route._write(txn, more))
    assert asked == [1, 2]  # the first attempt only
    assert [o.value for o in prod.written] == [b"a1", b"b1"] and prod.aborted == 1
    assert prod.offsets == [{TopicPartition("u.outbox", 0): OffsetAndMetadata(8, ""),
                             TopicPartition("u.outbox", 1): OffsetAndMetadata(41, "")}]


def test_a_producer_left_in_a_fatal_state_is_renewed_and_the_batch_written() -> None:
    """The coordinator answered a commit with an unknown error while a broker died: aiokafka's
    transaction manager went FATAL_ERROR and every later begin failed, so routing stopped for
    good (the 3-broker fault test). A new producer of the same id writes the batch."""
    from aiokafka.producer.transaction_manager import TransactionState

    h = Harness()
    route = OutboxRoute(h.config, h.router, 4)

    class Manager:
        state = TransactionState.READY

    class CommitFails(FlakyProducer):
        def __init__(self) -> None:
            super().__init__(set(), set())
            self._txn_manager = Manager()
            self.stopped = False

        @contextlib.asynccontextmanager
        async def transaction(self):
            if self._txn_manager.state is not TransactionState.READY:
                raise AssertionError("Invalid state transition FATAL_ERROR -> IN_TRANSACTION")
            async with super().transaction():
                yield
            self._txn_manager.state = TransactionState.FATAL_ERROR
            self.written.clear()  # the commit never happened
            raise KafkaConnectionError("EndTxn: UnknownError")

        async def stop(self) -> None:
            self.stopped = True

    class Fresh(FlakyProducer):
        async def start(self) -> None:
            pass
    first, fresh = CommitFails(), Fresh(set(), set())
    route._producer = first
    route._new_producer = lambda: fresh  # type: ignore[method-assign]
    rec = SimpleNamespace(topic="u.outbox", partition=0, offset=5, value=b"{}")
    assert asyncio.run(route._write(txn_of([rec], [[Out("u.queue", b"a")]])))
    assert first.stopped and route._producer is fresh
    assert [o.value for o in fresh.written] == [b"a"] and fresh.offsets


def test_broken_reads_the_transaction_manager() -> None:
    from aiokafka.producer.transaction_manager import TransactionState

    from kmta.pipeline.fencing import broken

    class P:
        def __init__(self, state) -> None:
            self._txn_manager = SimpleNamespace(state=state)
    assert not broken(P(TransactionState.READY))
    assert broken(P(TransactionState.FATAL_ERROR)) and broken(P(TransactionState.IN_TRANSACTION))
    assert not broken(object())


class CountingRouter:
    """``route`` that yields to the event loop ``value[0] + 1`` times and notes how many routes
    were in flight at once."""

    def __init__(self) -> None:
        self.now = self.most = 0

    async def route(self, raw, topic, partition, offset):
        self.now += 1
        self.most = max(self.most, self.now)
        for _ in range(raw[0] + 1):
            await asyncio.sleep(0)
        self.now -= 1
        return [Out("u.queue", raw, None, partition)]


def test_a_batch_is_routed_concurrency_at_a_time_each_output_at_its_record() -> None:
    h = Harness()
    for concurrency, n in ((4, 11), (4, 3), (1, 5), (32, 1)):
        router = CountingRouter()
        route = OutboxRoute(h.config, router, concurrency)  # type: ignore[arg-type]
        recs = [SimpleNamespace(topic="u.outbox", partition=i % 2, offset=i,
                                value=bytes([(7 * i) % 5, i])) for i in range(n)]
        batch: dict = {}
        for r in recs:
            batch.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        txn = _Txn(0.0)
        asyncio.run(route._take(txn, batch))
        assert router.most == min(concurrency, n) and router.now == 0
        assert [outs[0].value for outs in txn.routed] == [r.value for r in txn.records]
        assert sorted(r.offset for r in txn.records) == list(range(n))
        assert txn.last == {tp: rs[-1].offset for tp, rs in batch.items()}


def test_acked_waits_once_and_names_each_groups_first_error() -> None:
    """A group's first failed record names its error (or the error that kept it from being
    sent, ``Sent.errors``); a cancelled record counts as CancelledError; records still in
    flight are waited for; every error is retrieved (asyncio reports none as never
    retrieved)."""
    from kmta.pipeline.outputs import Sent, acked

    async def main() -> tuple[list, list]:
        loop = asyncio.get_running_loop()
        reported: list = []
        loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        f = [loop.create_future() for _ in range(7)]
        first, second, refused = ValueError("first"), KafkaConnectionError("second"), \
            MessageSizeTooLargeError("refused")
        f[0].set_result(None)
        f[1].set_result(None)
        f[2].set_exception(first)
        f[3].set_exception(second)
        f[5].cancel()
        loop.call_later(0.01, f[6].set_exception, second)  # still in flight when asked
        loop.call_later(0.01, f[4].set_result, None)
        sent = Sent([[f[0]], [f[1], f[2], f[3]], [f[4]], [f[5]], [f[6]]],
                    [None, None, refused, None, None])
        errors = await acked(sent)
        del f, sent
        import gc
        gc.collect()
        await asyncio.sleep(0)
        return errors, reported
    errors, reported = asyncio.run(main())
    assert [type(e).__name__ if e else None for e in errors] == [
        None, "ValueError", "MessageSizeTooLargeError", "CancelledError", "KafkaConnectionError"]
    assert str(errors[1]) == "first" and reported == []
