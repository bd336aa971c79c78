"""A compacted topic's view goes on past records it cannot keep: one its decoder refuses and
one whose decoded value its store refuses (the worker's ids view keeps partitions below 2^16
and offsets >= 0 only), one whose key is not UTF-8, each counted; the records after them are read.
A record written while the view waits in a held (idle) fetch reaches it without waiting for the
fetch's wait to run out: the senders' lock, pause and speed path."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer

from kmta.config import Config
from kmta.pipeline.kafkaio import CompactedView, client_options, ensure_topics
from kmta.pipeline.seenids import SeenIds
from kmta.policy.dedup import decode_seen


def seen(at: float, partition: int, offset: int) -> bytes:
    return json.dumps({"at": at, "partition": partition, "offset": offset}).encode()


@asynccontextmanager
async def ready_view(cfg: Config, topic: str,
                     **kw: int) -> AsyncIterator[CompactedView[SeenIds]]:
    """The worker's ids view of ``topic``, once it has caught up (30 s at most)."""
    view = CompactedView(cfg, topic, decode_seen, values=SeenIds(), **kw)
    await view.start()
    try:
        await asyncio.wait_for(view.ready.wait(), 30)
        yield view
    finally:
        await view.stop()


def test_the_ids_view_skips_what_it_cannot_keep_and_reads_on(kafka_bootstrap: str) -> None:
    cfg = Config.model_validate({"kafka": {"bootstrap_servers": kafka_bootstrap,
                                           "topic_prefix": f"cv{uuid.uuid4().hex[:8]}."}})

    async def go() -> None:
        await ensure_topics(cfg, timeout=60)
        topic = cfg.topic("ids")
        p = AIOKafkaProducer(**client_options(cfg))
        await p.start()
        try:
            for key, value in [(b"not-json", b"\xff{"), (b"far", seen(1.0, 70_000, 5)),
                               (b"back", seen(1.0, 3, -1)),
                               (b"\xff\xfe", seen(1.0, 3, 6)), (b"good", seen(2.0, 3, 7))]:
                await p.send_and_wait(topic, value, key=key, partition=0)
        finally:
            await p.stop()
        async with ready_view(cfg, topic) as view:
            assert view.bad_records == 4
            assert view.values.get("good") is not None and view.values.get("far") is None
            assert view._task is not None and not view._task.done()

    asyncio.run(go())


def test_a_view_of_a_topic_written_in_transactions_is_ready_and_skips_aborted(
        kafka_bootstrap: str) -> None:
    """The workers route in transactions: the ids topic ends in a commit marker, which takes
    an offset no record has (a view waiting for its last record's offset was never ready,
    and the restarted worker never routed); an aborted transaction's ids are not kept."""
    cfg = Config.model_validate({"kafka": {"bootstrap_servers": kafka_bootstrap,
                                           "topic_prefix": f"cv{uuid.uuid4().hex[:8]}."}})

    async def go() -> None:
        await ensure_topics(cfg, timeout=60)
        topic = cfg.topic("ids")
        p = AIOKafkaProducer(**client_options(cfg), transactional_id=f"{topic}.t")
        await p.start()
        try:
            async with p.transaction():
                await p.send_and_wait(topic, seen(1.0, 0, 1), key=b"kept", partition=0)
            try:
                async with p.transaction():
                    await p.send_and_wait(topic, seen(1.0, 0, 2), key=b"aborted", partition=0)
                    raise RuntimeError("abort it")
            except RuntimeError:
                pass
        finally:
            await p.stop()
        async with ready_view(cfg, topic) as view:
            assert view.values.get("kept") is not None and view.values.get("aborted") is None

    asyncio.run(go())


def test_the_ids_view_passes_over_its_own_records_and_reads_the_others(
        kafka_bootstrap: str) -> None:
    """The worker's ids view skips the records its own router wrote (their header names this
    process; streams/app.py), reads every other worker's, and is ready when the topic ends in
    its own records, written in a transaction as the route loop writes them."""
    cfg = Config.model_validate({"kafka": {"bootstrap_servers": kafka_bootstrap,
                                           "topic_prefix": f"cv{uuid.uuid4().hex[:8]}."}})
    own = ("kmta-writer", b"w1.own")

    async def go() -> None:
        await ensure_topics(cfg, timeout=60)
        topic = cfg.topic("ids")
        p = AIOKafkaProducer(**client_options(cfg), transactional_id=f"{topic}.t")
        await p.start()
        try:
            async with p.transaction():
                await p.send_and_wait(topic, seen(1.0, 0, 1), key=b"theirs", partition=0,
                                      headers=[("kmta-writer", b"w2.other")])
                await p.send_and_wait(topic, seen(1.0, 0, 2), key=b"mine", partition=0,
                                      headers=[own])
        finally:
            await p.stop()
        view = CompactedView(cfg, topic, decode_seen, values=SeenIds(), skip=own)
        await view.start()
        try:
            await asyncio.wait_for(view.ready.wait(), 30)
            assert view.values.get("theirs") is not None and view.values.get("mine") is None
        finally:
            await view.stop()
        async with ready_view(cfg, topic) as restarted:  # a new process reads them all
            assert restarted.values.get("mine") is not None

    asyncio.run(go())


def test_a_record_answers_the_views_held_fetch(kafka_bootstrap: str) -> None:
    """The views' idle fetches are held long (``VIEW_WAIT_MS``; here 30 s): a record written
    meanwhile, plain or in a transaction (read committed: it counts once the commit marker
    moves the last stable offset), is in the view long before the wait would have run out."""
    cfg = Config.model_validate({"kafka": {"bootstrap_servers": kafka_bootstrap,
                                           "topic_prefix": f"cv{uuid.uuid4().hex[:8]}."}})
    wait_ms = 30_000

    async def until_seen(view: CompactedView[SeenIds], key: str) -> float:
        t0 = time.monotonic()
        deadline = t0 + wait_ms / 1000 / 3
        while view.values.get(key) is None:
            assert time.monotonic() < deadline, f"{key} not seen while the fetch was held"
            await asyncio.sleep(0.02)
        return time.monotonic() - t0

    async def go() -> None:
        await ensure_topics(cfg, timeout=60)
        topic = cfg.topic("ids")
        plain = AIOKafkaProducer(**client_options(cfg))
        txn = AIOKafkaProducer(**client_options(cfg), transactional_id=f"{topic}.t")
        await plain.start()
        await txn.start()
        try:
            async with ready_view(cfg, topic, wait_ms=wait_ms) as view:
                assert view._consumer is not None
                assert view._consumer._fetcher._fetch_max_wait_ms == wait_ms
                await asyncio.sleep(1.0)  # the first fetch of the empty topic is held now
                await plain.send_and_wait(topic, seen(1.0, 0, 1), key=b"plain", partition=3)
                await until_seen(view, "plain")
                await asyncio.sleep(1.0)
                async with txn.transaction():
                    await txn.send_and_wait(topic, seen(1.0, 0, 2), key=b"txn", partition=5)
                await until_seen(view, "txn")
        finally:
            await plain.stop()
            await txn.stop()

    asyncio.run(go())
