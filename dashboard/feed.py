"""Kafka edge of the dashboard: replay the public topics into a ``Board``; send commands.

The consumer uses no group: it assigns every partition of results, state, audit and nodes and
reads them from the beginning, so a restarted dashboard rebuilds the same truth from Kafka.
The suppression topic is the exception: its records go to the board's suppression store, a
file that keeps the offsets it has applied, so a restarted panel reads only what changed while
it was down (``kmta/pipeline/suppressionstore.py``; 10 M records take ~15 min to read whole).
Records that do not decode are skipped and counted (``board.skipped``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from dashboard.model import Board
from kmta.config import Config
from kmta.pipeline.control import ControlError
from kmta.pipeline.health import Health, KafkaProbe, watch
from kmta.pipeline.kafkaio import client_options, topic_partitions
from kmta.pipeline.lag import Lag
from kmta.pipeline.suppressionstore import apply_value, positions
from schemas.control import ControlCommand, ControlRecord
from schemas.events import DeliveryEvent
from schemas.nodes import NodeStats
from schemas.state import IspState

__all__ = ["TOPICS", "Feed", "apply_record", "catch_up"]

log = logging.getLogger(__name__)

TOPICS = ("results", "state", "audit", "nodes", "suppression")
_DECODERS: dict[str, tuple[type, str]] = {
    "results": (DeliveryEvent, "apply_event"),
    "state": (IspState, "apply_state"),
    "audit": (ControlRecord, "apply_audit"),
    "nodes": (NodeStats, "apply_node"),
}


def apply_record(board: Board, kind: str, value: bytes | None, key: bytes | None = None) -> bool:
    """Decode one record of topic ``kind`` and apply it; False (and counted) if undecodable.
    Tombstones (``None`` values on compacted topics) are ignored, but on the suppression
    topic, where they remove a record."""
    if kind == "suppression":
        return _apply_suppression(board, value, key)
    if value is None:
        return True
    model, method = _DECODERS[kind]
    try:
        obj = model.model_validate_json(value)
    except (ValidationError, ValueError):
        board.skipped += 1
        return False
    getattr(board, method)(obj)
    return True


def _apply_suppression(board: Board, value: bytes | None, key: bytes | None) -> bool:
    if not apply_value(board.suppression_store, key, value):
        board.skipped += 1
        return False
    return True


class _Reader:
    """Owns one consumer assigned to every partition of the dashboard topics."""

    def __init__(self, config: Config, client_id: str, board: Board,
                 topics: tuple[str, ...] = TOPICS) -> None:
        self.config = config
        self.board = board
        self.kinds = {config.topic(k): k for k in topics}
        self._marked: dict[TopicPartition, int] = {}
        self.consumer = AIOKafkaConsumer(
            **client_options(config),
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",  # results come in the senders' transactions
        )
        self.assigned: set[TopicPartition] = set()

    async def start(self) -> None:
        await self.consumer.start()
        await self.refresh()

    async def refresh(self) -> bool:
        """Assign partitions of topics that appeared since; keep the positions of the others.
        False (nothing changed) while a topic is still missing: the next refresh retries."""
        # subscribe() without a group would reset every position whenever a topic appears,
        # so we assign by hand from the admin client's view of the topics.
        try:
            tps = set(await topic_partitions(self.config, list(self.kinds)))
        except TimeoutError:
            log.warning("dashboard topics %s not all found yet; retrying", sorted(self.kinds))
            return False
        if tps <= self.assigned:
            return False
        kept = {}
        for tp in self.assigned:
            kept[tp] = await self.consumer.position(tp)
        self.consumer.assign(sorted(tps))
        for tp, pos in kept.items():
            self.consumer.seek(tp, pos)
        new = sorted(tps - self.assigned)
        if any(self.kinds[tp.topic] == "suppression" for tp in new):
            # from where the store resumes; all partitions at once: a partition count that
            # changed rebuilds the store
            with self.board.lock:
                await positions(self.consumer, self.board.suppression_store,
                                [tp for tp in sorted(tps) if self.kinds[tp.topic] == "suppression"])
        if rest := [tp for tp in new if self.kinds[tp.topic] != "suppression"]:
            await self.consumer.seek_to_beginning(*rest)
        self.assigned = tps
        return True

    async def end_offsets(self) -> dict[TopicPartition, int]:
        if not self.assigned:
            return {}
        return await self.consumer.end_offsets(sorted(self.assigned))

    async def caught_up(self, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await self.consumer.position(tp) < end:
                return False
        return True

    async def poll(self, board: Board, timeout_ms: int = 500) -> int:
        if not self.assigned:
            await asyncio.sleep(timeout_ms / 1000)
            return 0
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        n = 0
        with board.lock:
            for tp, records in batches.items():
                kind = self.kinds[tp.topic]
                for rec in records:
                    apply_record(board, kind, rec.value, rec.key)
                    n += 1
        await self._mark(board)
        return n

    async def _mark(self, board: Board) -> None:
        """Commit the suppression store with the positions it has read to (past transaction
        markers and compacted gaps too), when they moved."""
        moved = {}
        for tp in self.assigned:
            if self.kinds[tp.topic] == "suppression":
                pos = await self.consumer.position(tp)
                if self._marked.get(tp) != pos:
                    moved[tp] = pos
        if moved:
            with board.lock:
                store = board.suppression_store
                for tp, pos in moved.items():
                    store.mark(tp.topic, tp.partition, pos)
                store.flush()
            self._marked.update(moved)

    async def stop(self) -> None:
        await self.consumer.stop()


async def catch_up(config: Config, board: Board, *, timeout: float = 60.0) -> None:
    """Read the topics from the beginning up to their end offsets as of now (``kmta status``,
    which shows no suppression record: that topic, 10 M records at scale, is left out)."""
    reader = _Reader(config, "kmta-status", board,
                     tuple(t for t in TOPICS if t != "suppression"))
    try:
        await asyncio.wait_for(reader.start(), timeout)
        if not reader.assigned:
            raise ControlError(
                f"topics {', '.join(sorted(reader.kinds))} not found: check kafka.topic_prefix "
                "in the config, or create them with `kmta topics`"
            )
        ends = await reader.end_offsets()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await reader.caught_up(ends):
            if loop.time() > deadline:
                raise TimeoutError("timed out reading the topics up to their end")
            await reader.poll(board, timeout_ms=200)
    except KafkaError as e:
        raise ControlError(
            f"cannot read from Kafka at {config.kafka.bootstrap_servers}: {e}"
        ) from None
    finally:
        await reader.stop()


class Feed:
    """A background thread with its own event loop: replays the topics into ``board`` and
    sends ``ControlCommand`` records (acks=all, key = ISP). ``send`` is the dashboard's
    controller (called from web threads)."""

    def __init__(
        self,
        config: Config,
        board: Board,
        *,
        refresh_every: float = 10.0,
        on_error: Callable[[BaseException], None] | None = None,
        health: Health | None = None,
    ) -> None:
        self.config = config
        self.health = health or Health("dashboard")
        self.board = board
        self.refresh_every = refresh_every
        self.on_error = on_error
        self.caught_up = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._producer: AIOKafkaProducer | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kmta-dashboard-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def send(self, cmd: ControlCommand) -> None:
        """Produce ``cmd`` to the control topic and wait for the broker's ack."""
        if not self.ready.wait(30) or self._loop is None or self._producer is None:
            raise ControlError(f"not connected to Kafka: {self.error or 'starting'}")
        fut = asyncio.run_coroutine_threadsafe(
            self._producer.send_and_wait(
                self.config.topic("control"), cmd.to_json(), key=cmd.isp.encode()
            ),
            self._loop,
        )
        try:
            fut.result(timeout=30)
        except (KafkaError, TimeoutError) as e:
            raise ControlError(f"could not send the command to Kafka: {e!r}") from None

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Produce one record (a suppression change, its audit entry) and wait for the ack."""
        if not self.ready.wait(30) or self._loop is None or self._producer is None:
            raise ControlError(f"not connected to Kafka: {self.error or 'starting'}")
        fut = asyncio.run_coroutine_threadsafe(
            self._producer.send_and_wait(topic, value, key=key), self._loop)
        try:
            fut.result(timeout=30)
        except (KafkaError, TimeoutError) as e:
            raise ControlError(f"could not write to Kafka: {e!r}") from None

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:
            self.error = e
            log.exception("dashboard feed stopped")
            if self.on_error:
                self.on_error(e)
        finally:
            self._producer = None
            self.ready.set()  # wake senders: they now fail fast with the reason
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        producer = AIOKafkaProducer(
            **client_options(self.config),
            client_id="kmta-dashboard",
            acks="all",
        )
        reader = _Reader(self.config, "kmta-dashboard", self.board)
        watching = asyncio.create_task(self._watch(reader))
        await producer.start()
        self._producer = producer
        try:
            await reader.start()
            self.ready.set()
            ends = await reader.end_offsets()
            loop = asyncio.get_running_loop()
            next_refresh = loop.time() + self.refresh_every
            while not self._stop.is_set():
                await reader.poll(self.board)
                if not self.caught_up.is_set() and reader.assigned and await reader.caught_up(ends):
                    self.caught_up.set()
                if loop.time() >= next_refresh:
                    next_refresh = loop.time() + self.refresh_every
                    if await reader.refresh() and not self.caught_up.is_set():
                        ends = await reader.end_offsets()
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            await reader.stop()
            await producer.stop()

    async def _watch(self, reader: _Reader) -> None:
        """Metrics and readiness: Kafka reachable, the topics assigned and read to the end."""
        probe = KafkaProbe.of(reader.consumer)
        lag = Lag("dashboard", lambda: reader.consumer)

        async def checks() -> dict[str, str]:
            failing = await probe.failing()
            if not reader.assigned:
                failing["partitions"] = "the dashboard topics are not found yet"
            if not self.caught_up.is_set():
                failing["state"] = "the topics are not read to their end yet"
            return failing
        try:
            await watch(self.health, checks, (lag.refresh,))
        finally:
            lag.clear()
