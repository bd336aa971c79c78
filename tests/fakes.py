"""In-memory stand-ins for the sender's seams (after httpx's ``MockTransport``): a transport
whose replies a test scripts, a transactional producer that records what each transaction
wrote, a consumer that records pauses. Each implements the Protocol of its seam."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from kmta.policy.reply import Reply
from schemas import Envelope, MxHost, TlsPolicy
from senders.transport import Ahead, ConnectFailed, Outcome

__all__ = ["FakeConsumer", "FakeProducer", "FakeTransport", "accepted", "refused"]


def accepted() -> Outcome:
    return Outcome(Reply(250, "2.0.0", "ok"), True, "mx.test")


def refused(code: int, text: str, enhanced: str | None = None, *, internal: bool = False,
            stage: str = "rcpt") -> Outcome:
    return Outcome(Reply(code, enhanced, text, internal), False, "mx.test", stage)


class FakeConnection:
    def __init__(self, transport: FakeTransport, source_ip: str | None) -> None:
        self.mx = "mx.test"
        self.delivered = 0
        self.closed = False
        self._t = transport
        self.source_ip = source_ip
        self.ahead: Envelope | None = None  # taken behind the last message's end of data

    @property
    def usable(self) -> bool:
        return not self.closed

    async def deliver(self, env: Envelope, timeout: float,
                      ahead: Ahead | None = None) -> Outcome:
        pre, self.ahead = self.ahead, None
        assert pre is None or pre is env, "the message written ahead must be delivered next"
        if self.closed or (pre is not None and ahead is not None and not ahead.still_open()):
            # the session ended before this message had a reply of its own, or its lane was
            # locked meanwhile (like SmtpConnection: dropped before the body)
            assert pre is env, "no deliver on a closed connection but for one written ahead"
            self.closed = True
            return Outcome(Reply(451, "4.4.2", "ended", True), False, self.mx, "mail", True,
                           attempted=False)
        outcome = self._t.reply(env)
        self._t.sent.append((env.id, self.source_ip))
        # like SmtpConnection with pipelined DATA: the next message rides with the body
        if self._t.pipelining and ahead is not None and outcome.stage == "data":
            nxt = ahead.peek()
            if nxt is not None:
                ahead.take()
                self.ahead = nxt
                self._t.rode.append((env.id, nxt.id))
        if outcome.accepted:
            self.delivered += 1
        if outcome.connection_lost:
            self.closed = True
        return outcome

    async def close(self) -> None:
        assert self.ahead is None, "closed with a message written ahead"
        self.closed = True


@dataclass
class FakeTransport:
    """``reply(env)`` scripts each delivery's outcome (default: accepted); ``refuse_connect``
    makes every connection attempt fail with that outcome; ``pipelining``: a message whose
    body goes (stage ``data``) takes the lane's next one behind it (``rode``: the pairs)."""

    reply: Callable[[Envelope], Outcome] = field(default=lambda env: accepted())
    refuse_connect: Outcome | None = None
    sent: list[tuple[str, str | None]] = field(default_factory=list)
    connects: int = 0
    pipelining: bool = False
    rode: list[tuple[str, str]] = field(default_factory=list)

    async def connect(self, mx: Sequence[MxHost], source_ip: str | None,
                      connect_timeout: float, tls: str | None = None,
                      sts: TlsPolicy | None = None) -> FakeConnection:
        self.connects += 1
        if self.refuse_connect is not None:
            raise ConnectFailed(self.refuse_connect)
        return FakeConnection(self, source_ip)


@dataclass
class FakeProducer:
    """Records every committed transaction as (records, offsets); ``fail`` makes the next
    transactions raise it (one per item), ``block`` makes them wait until it is set."""

    committed: list[tuple[list[tuple[str, bytes | None]], dict[TopicPartition,
                                                              OffsetAndMetadata]]] = field(
        default_factory=list)
    fail: list[BaseException] = field(default_factory=list)
    block: asyncio.Event | None = None
    _records: list[tuple[str, bytes | None]] = field(default_factory=list)
    _offsets: dict[TopicPartition, OffsetAndMetadata] = field(default_factory=dict)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self._records, self._offsets = [], {}
        if self.block is not None:
            await self.block.wait()
        yield
        if self.fail:
            raise self.fail.pop(0)
        self.committed.append((self._records, self._offsets))

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> Any:
        assert headers is None or isinstance(headers, list), "aiokafka takes headers as a list"
        self._records.append((topic, value))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def send_offsets_to_transaction(
            self, offsets: dict[TopicPartition, OffsetAndMetadata], group_id: str) -> None:
        self._offsets = dict(offsets)


@dataclass
class FakeConsumer:
    assigned: set[TopicPartition] = field(default_factory=set)
    paused_: set[TopicPartition] = field(default_factory=set)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused_.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused_.difference_update(partitions)
