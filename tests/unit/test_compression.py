"""Producer compression (kmta.pipeline.kafkaio): lz4 at its fast level, as every kmta producer
writes its batches; the codec the config names."""
from __future__ import annotations

import random

import aiokafka.codec
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from kmta.config import Config
from kmta.pipeline.kafkaio import LZ4_LEVEL, make_producer

HEADER = 61  # bytes of a v2 record batch before its (compressed) records


def _html(size: int) -> bytes:
    rnd = random.Random(7)
    out = b""
    while len(out) < size:
        out += (f'<tr><td style="color:#{rnd.randrange(16**6):06x}"><a href="https://x.test/'
                f'{rnd.randrange(10**6)}">{rnd.random()}</a></td></tr>\r\n').encode()
    return out[:size]


def _batch(codec: int, values: list[bytes]) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=0,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 22)
    for i, v in enumerate(values):
        b.append(i, timestamp=1_790_000_000_000, key=b"gmail", value=v, headers=[])
    return bytes(b.build())


async def test_lz4_batches_are_written_at_the_fast_level() -> None:
    producer = make_producer(Config.model_validate({}))  # lz4 by default
    await producer.stop()
    values = [_html(100_000), _html(90_000)]
    records = _batch(0, values)[HEADER:]
    written = _batch(3, values)
    assert written[HEADER:] == aiokafka.codec.lz4_encode(records, level=LZ4_LEVEL)
    assert written[HEADER:] != aiokafka.codec.lz4_encode(records, level=9)  # aiokafka's own
    batch = MemoryRecords(written).next_batch()
    assert batch is not None and batch.compression_type == 3
    assert [r.value for r in batch] == values


async def test_the_configured_codec_is_used() -> None:
    for name, want in (("zstd", "zstd"), ("none", None), ("lz4", "lz4")):
        producer = make_producer(Config.model_validate({"kafka": {"compression": name}}))
        try:
            assert producer._compression_type == want
        finally:
            await producer.stop()
