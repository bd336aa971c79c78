"""A compacted topic's view passes over the records that carry its ``skip`` header (the
worker's own ids records, kmta.pipeline.kafkaio.CompactedView) and still becomes ready when
the topic ends in such records. A fake consumer stands in for aiokafka's."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import TopicPartition

from kmta.config import Config
from kmta.pipeline.kafkaio import CompactedView
from kmta.pipeline.seenids import SeenIds
from kmta.policy.dedup import Seen, decode_seen, encode_seen

OWN = ("kmta-writer", b"w1.abc")
TP = TopicPartition("u.ids", 0)


@dataclass
class Rec:
    offset: int
    key: bytes
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class FakeConsumer:
    def __init__(self, records: list[Rec]) -> None:
        self.batches = [{TP: records}]

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(3600)
        return {}

    async def position(self, tp: TopicPartition) -> int:
        return 4


async def read_to_end(view: CompactedView[SeenIds], records: list[Rec]) -> None:
    """``view``'s loop over ``records`` (one partition, offsets from 0) until it is ready."""
    view._consumer = FakeConsumer(records)  # type: ignore[assignment]
    view._end = {TP: len(records)}
    task = asyncio.create_task(view._run())
    await asyncio.wait_for(view.ready.wait(), 5)
    task.cancel()


def test_records_with_the_skip_header_are_passed_over_and_the_view_gets_ready() -> None:
    other = Seen(2.0, 1, 9)
    records = [Rec(0, b"theirs", encode_seen(other)),
               Rec(1, b"mine", encode_seen(Seen(3.0, 0, 5)), (OWN,)),
               Rec(2, b"theirs-too", encode_seen(other), (("kmta-writer", b"w2.def"),)),
               Rec(3, b"mine-2", None, (OWN,))]  # even a tombstone of its own: passed over

    view = CompactedView(Config(), "u.ids", decode_seen, values=SeenIds(), skip=OWN)
    view.values["mine-2"] = Seen(4.0, 0, 6)  # the router kept it as it wrote it
    asyncio.run(read_to_end(view, records))
    assert view.values.get("theirs") == other and view.values.get("theirs-too") == other
    assert view.values.get("mine") is None  # not read back: only the router stores its own
    assert view.values.get("mine-2") == Seen(4.0, 0, 6)
    assert view.bad_records == 0


def test_without_skip_every_record_is_read() -> None:
    records = [Rec(0, b"mine", encode_seen(Seen(3.0, 0, 5)), (OWN,))]

    view = CompactedView(Config(), "u.ids", decode_seen, values=SeenIds())
    asyncio.run(read_to_end(view, records))
    assert view.values.get("mine") == Seen(3.0, 0, 5)
