"""A new owner reads a partition's committed offset only once no transactional offset commit
is pending for it (OffsetFetch v7, require_stable): read during the previous owner's last
transaction it would be the offset from before, and the messages in between would be
delivered, and reported final, twice."""
from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from kmta.pipeline.kafkaio import client_options
from senders.offsetfetch import fetch_stable


def test_committed_offsets_are_read_once_the_transaction_is_decided(pipeline_factory) -> None:
    p = pipeline_factory()
    group = f"{p.prefix}stable-test"
    queue = p.config.topic("queue")
    tp0, tp1 = TopicPartition(queue, 0), TopicPartition(queue, 1)

    async def go() -> None:
        prod = AIOKafkaProducer(**client_options(p.config), transactional_id=f"{p.prefix}s")
        cons = AIOKafkaConsumer(**client_options(p.config), group_id=group,
                                enable_auto_commit=False)
        await prod.start()
        await cons.start()
        try:
            async with prod.transaction():
                await prod.send_offsets_to_transaction(
                    {tp0: OffsetAndMetadata(5, "kmta-done:1")}, group)
            assert await fetch_stable(cons, group, [tp0, tp1]) == {
                tp0: OffsetAndMetadata(5, "kmta-done:1")}
            await prod.begin_transaction()
            await prod.send_offsets_to_transaction({tp0: OffsetAndMetadata(9, "")}, group)
            unstable = await cons._coordinator.fetch_committed_offsets([tp0])
            assert unstable[tp0].offset == 5  # the race: aiokafka's own fetch says 5
            with pytest.raises(TimeoutError):  # pending: not answered with the old 5
                await asyncio.wait_for(fetch_stable(cons, group, [tp0]), 2)
            late = asyncio.create_task(fetch_stable(cons, group, [tp0]))
            await asyncio.sleep(0.5)
            assert not late.done()
            await prod.commit_transaction()
            assert await asyncio.wait_for(late, 10) == {tp0: OffsetAndMetadata(9, "")}
        finally:
            await cons.stop()
            await prod.stop()

    asyncio.run(go())
