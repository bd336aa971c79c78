"""What the broker stores: the record batches of a topic as a fetch returns them, and their
compression attribute (aiokafka's consumer decompresses and does not tell it)."""
from __future__ import annotations

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from kmta.config import Config
from kmta.pipeline.kafkaio import client_options, topic_partitions

__all__ = ["LZ4", "NONE", "read_values", "stored_codecs"]

NONE, LZ4 = 0, 3  # a record batch's compression attribute (1 gzip, 2 snappy, 4 zstd)
FETCH_MAX = 64 * 1024 * 1024


async def read_values(config: Config, topic: str) -> list[bytes]:
    """Every record value of ``topic``, as it is (uncommitted ones too)."""
    tps = await topic_partitions(config, [topic])
    c = AIOKafkaConsumer(**client_options(config), enable_auto_commit=False)
    await c.start()
    try:
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        end = await c.end_offsets(tps)
        out: list[bytes] = []
        while any([await c.position(tp) < end[tp] for tp in tps]):
            for recs in (await c.getmany(timeout_ms=500)).values():
                out += [r.value for r in recs if r.value is not None]
        return out
    finally:
        await c.stop()


async def stored_codecs(config: Config, topic: str) -> list[int]:
    """The compression attribute of every record batch of ``topic`` as the broker stores and
    serves it (a fetch returns the log's batches unchanged); transaction markers (control
    batches, never compressed) are left out."""
    tps = await topic_partitions(config, [topic])
    client = AIOKafkaClient(**client_options(config))
    await client.bootstrap()
    try:
        await client.add_topic(topic)  # its partitions' leaders
        out: list[int] = []
        for tp in tps:
            node = client.cluster.leader_for_partition(TopicPartition(topic, tp.partition))
            req = FetchRequest(max_wait_time=0, min_bytes=1, max_bytes=FETCH_MAX,
                               isolation_level=0,
                               topics=[(topic, [(tp.partition, 0, FETCH_MAX)])])
            resp = await client.send(node, req)
            for _, partitions in resp.topics:
                for _, error, _, *part in partitions:
                    assert error == 0
                    batches = MemoryRecords(part[-1])
                    while (batch := batches.next_batch()) is not None:
                        if not batch.is_control_batch:  # a transaction's marker: no records
                            out.append(batch.compression_type)
        return out
    finally:
        await client.close()
