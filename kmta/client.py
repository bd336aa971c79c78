"""Producing messages to the outbox and waiting for their outcomes (``kmta send``, demo, bench)."""
from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator

from aiokafka import AIOKafkaConsumer

from kmta.config import Config
from kmta.errors import InputError
from kmta.pipeline.kafkaio import client_options, make_producer, topic_partitions
from kmta.pipeline.outputs import new_id

__all__ = ["Progress", "ResultCollector", "produce", "read_results", "send_file"]


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, label: str, stream=sys.stderr) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0
        self.start = time.monotonic()

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.1 if self.tty else 2.0):
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        rate = done / max(now - self.start, 1e-6)
        line = (f"{self.label:<10} [{bar:<30}] {done}/{self.total} {frac:6.1%} "
                f"{rate:7.0f}/s {extra}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self, done: int, extra: str = "") -> None:
        self.update(done, extra, force=True)
        if self.tty:
            self.stream.write("\n")


def iter_messages(lines: Iterable[str]) -> Iterator[dict]:
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"line {n}: not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise InputError(f"line {n}: not a JSON object")
        yield doc


async def produce(config: Config, docs: list[dict], progress: Progress | None = None) -> list[str]:
    """Send messages to the outbox (ids added where missing); returns the ids."""
    producer = make_producer(config, linger_ms=20)
    await producer.start()
    ids = []
    try:
        futs = []
        for i, doc in enumerate(docs):
            doc.setdefault("id", new_id())
            ids.append(doc["id"])
            futs.append(await producer.send(config.topic("outbox"),
                                            json.dumps(doc).encode(), key=doc["id"].encode()))
            if progress and i % 200 == 0:
                progress.update(i)
        await asyncio.gather(*futs)
        if progress:
            progress.close(len(docs))
    finally:
        await producer.stop()
    return ids


class ResultCollector:
    """Reads the results topic from a starting point and keeps every event per id."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.events: dict[str, list[dict]] = {}
        self.finals: dict[str, dict] = {}
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self, from_beginning: bool = False) -> None:
        topic = self.config.topic("results")
        # results are written in the senders' transactions: read only committed ones
        c = AIOKafkaConsumer(**client_options(self.config),
                             enable_auto_commit=False, fetch_max_wait_ms=100,
                             isolation_level="read_committed")
        await c.start()
        try:
            tps = await topic_partitions(self.config, [topic])
            c.assign(tps)
            if from_beginning:
                await c.seek_to_beginning(*tps)
            else:
                await c.seek_to_end(*tps)
                for tp in tps:  # resolve the lazy seek now, before anything is produced
                    await c.position(tp)
        except BaseException:
            await c.stop()
            raise
        self._consumer = c

    async def poll(self, timeout_ms: int = 200) -> int:
        assert self._consumer is not None
        n = 0
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=10000)
        for records in batch.values():
            for r in records:
                ev = json.loads(r.value)
                self.events.setdefault(ev["id"], []).append(ev)
                if ev.get("final"):
                    self.finals.setdefault(ev["id"], ev)
                n += 1
        return n

    async def wait_final(self, ids: Iterable[str], timeout: float,
                         progress: Progress | None = None) -> bool:
        want = set(ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.poll()
            done = len(want & self.finals.keys())
            if progress:
                progress.update(done, self.summary_line(want))
            if done == len(want):
                if progress:
                    progress.close(done, self.summary_line(want))
                return True
        return False

    def summary_line(self, ids: set[str]) -> str:
        c = Counter(self.finals[i]["status"] for i in ids if i in self.finals)
        return " ".join(f"{k}={v}" for k, v in sorted(c.items()))

    async def stop(self) -> None:
        if self._consumer:
            await self._consumer.stop()


def send_file(config: Config, path: str, wait: bool, timeout: float) -> int:
    with (sys.stdin if path == "-" else open(path, encoding="utf-8")) as f:
        docs = list(iter_messages(f))

    async def go() -> int:
        collector = ResultCollector(config)
        if wait:
            await collector.start()
        ids = await produce(config, docs, Progress(len(docs), "sent"))
        print(f"sent {len(ids)} messages to {config.topic('outbox')}")
        if not wait:
            return 0
        ok = await collector.wait_final(ids, timeout, Progress(len(ids), "final"))
        await collector.stop()
        c = Counter(collector.finals[i]["status"] for i in ids if i in collector.finals)
        print(json.dumps(dict(c)))
        return 0 if ok else 1

    return asyncio.run(go())


async def read_results(config: Config, follow: bool = False,
                       poll_ms: int = 200) -> AsyncIterator[dict]:
    """Every committed result event from the beginning of the results topic, in partition
    order; without ``follow`` it stops at the end offsets it found on starting.

    Those ends are the last stable offsets (read_committed): a transaction still open when the
    reader started is not waited for, so the read is bounded by what was committed then, never
    by how busy the topic is. Reaching an end is judged by the consumer's position, not by the
    last record seen: a transaction's commit marker takes an offset too, and it is often the
    last one of a partition."""
    topic = config.topic("results")
    c = AIOKafkaConsumer(**client_options(config), enable_auto_commit=False,
                         fetch_max_wait_ms=100, isolation_level="read_committed")
    await c.start()
    try:
        tps = await topic_partitions(config, [topic])
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        left = {tp for tp in tps if ends.get(tp, 0) > 0}
        while follow or left:
            batch = await c.getmany(timeout_ms=poll_ms, max_records=5000)
            for records in batch.values():
                for r in records:
                    try:
                        ev = json.loads(r.value)
                    except (TypeError, ValueError):
                        continue  # not a result event: never stop a reader for it
                    if isinstance(ev, dict):
                        yield ev
            for tp in list(left):
                if await c.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        await c.stop()
