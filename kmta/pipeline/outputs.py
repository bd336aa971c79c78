"""What a processing step wants written: plain records, produced by the caller's edge; and the
result events every process kind writes."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

from kmta.config import Config
from kmta.pipeline.metrics import count_event
from schemas import DeliveryEvent, Envelope, Status

__all__ = [
    "CLEARED",
    "QUEUED_HEADER",
    "RECORD_ERRORS",
    "Ending",
    "Out",
    "Sent",
    "acked",
    "ended",
    "event_out",
    "internal_event",
    "new_id",
    "send_each",
    "write",
    "write_each",
]

# errors that belong to one record (retrying it cannot help); any other error is the cluster's
# (unreachable, leader moving, not authorised) and is retried
RECORD_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError,
                 UnicodeError, TypeError, ValueError)


# header of a results record whose event is ``queued`` (value b"queued"): the brain's consumer
# drops such records before faust makes events of them (streams/committed.py), without decoding
QUEUED_HEADER = ("kmta-status", b"queued")


@dataclass(frozen=True)
class Out:
    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] | None = None


async def write(producer: Any, outs: Iterable[Out]) -> None:
    """Hand every record to an aiokafka producer (they batch together), then wait until the
    broker acknowledged each one."""
    futs = [await producer.send(o.topic, o.value, key=o.key, partition=o.partition,
                                headers=_headers(o)) for o in outs]
    await asyncio.gather(*futs)


def _headers(o: Out) -> list[tuple[str, bytes]] | None:
    """``o``'s headers as aiokafka takes them (a list: its record builder refuses a tuple)."""
    return list(o.headers) if o.headers else None


@dataclass
class Sent:
    """Groups of records handed to a producer (``send_each``), not yet acknowledged: per
    group, the futures of its records and the error that kept it from being sent."""

    futures: list[list[Any]]
    errors: list[BaseException | None]

    def done(self) -> bool:
        """Every record acknowledged or failed: ``acked`` returns at once."""
        return all(f.done() for futs in self.futures for f in futs)


async def send_each(producer: Any, groups: list[list[Out]]) -> Sent:
    """Hand groups of records (one group per input record) to an aiokafka producer without
    waiting for the broker: ``acked`` waits. A group refused before sending (e.g. too large)
    has its error at once and the rest of it is not sent."""
    futs: list[list[Any]] = []
    errors: list[BaseException | None] = [None] * len(groups)
    for i, outs in enumerate(groups):
        mine = []
        for o in outs:
            try:
                mine.append(await producer.send(o.topic, o.value, key=o.key,
                                                partition=o.partition, headers=_headers(o)))
            except Exception as e:  # noqa: BLE001 - refused before sending (e.g. too large)
                errors[i] = e
                break
        futs.append(mine)
    return Sent(futs, errors)


async def acked(sent: Sent) -> list[BaseException | None]:
    """Per group of ``send_each``, which error kept it from being written (None: every record
    of the group acknowledged); a group that failed may be partly written.

    One wait for every record still unacknowledged, then each future read as it is: an
    awaited gather per group yields to the event loop even when its futures are done, an
    event-loop turn (an epoll call) per input record (docs/benchmark.md, session 16). Every
    future's error is retrieved (none is left for asyncio to report as never retrieved); a
    cancelled one counts as ``CancelledError``, as gather's ``return_exceptions`` gave it."""
    pending = [f for mine in sent.futures for f in mine if not f.done()]
    if pending:
        await asyncio.wait(pending)
    errors = list(sent.errors)
    for i, mine in enumerate(sent.futures):
        for f in mine:
            e = asyncio.CancelledError() if f.cancelled() else f.exception()
            if e is not None and errors[i] is None:
                errors[i] = e
    return errors


async def write_each(producer: Any, groups: list[list[Out]]) -> list[BaseException | None]:
    """Write groups of records (one group per input record) and say, per group, which error
    kept it from being written (None: every record of the group acknowledged). The groups
    batch together as with ``write``; a group that failed may be partly written."""
    return await acked(await send_each(producer, groups))


def new_id() -> str:
    """Time-ordered unique id (uuid4 tail after a ms timestamp)."""
    return f"{int(time.time() * 1000):x}-{uuid.uuid4().hex[:16]}"


def event_out(config: Config, ev: DeliveryEvent) -> Out:
    count_event(ev)  # kmta_messages_total: every result event is made here
    key = (ev.isp or ev.domain or "").encode()
    return Out(config.topic("results"), ev.to_json(), key,
               headers=(QUEUED_HEADER,) if ev.status is Status.QUEUED else None)


def internal_event(env: Envelope, status: Status, code: int, enhanced: str, text: str,
                   category: str, now: float, node: str | None = None,
                   attempt: int | None = None) -> DeliveryEvent:
    """An event whose reply kmta made up itself (``internal``: never matched against provider
    patterns)."""
    return DeliveryEvent(
        id=env.id, to=env.rcpt, isp=env.isp, domain=env.domain, status=status,
        final=status not in (Status.DEFERRED, Status.QUEUED),
        attempt=env.attempt if attempt is None else attempt, code=code,
        enhanced_code=enhanced, response=text, category=category, internal=True,
        node=node, timestamp=now, accepted_at=env.accepted_at, campaign=env.campaign,
        meta=env.meta, sender=env.sender, pool=env.pool)


CLEARED = "queue cleared by an operator"  # the text of a message cancelled by a clear


class Ending(Enum):
    """How kmta ends a message itself, without a provider's reply: (status, code, enhanced
    code, category)."""

    CANCELLED = (Status.CANCELLED, 554, "5.3.0", "cancelled")
    EXPIRED = (Status.EXPIRED, 554, "5.4.7", "expired")


def ended(config: Config, env: Envelope, ending: Ending, text: str, now: float,
          node: str | None = None) -> Out:
    """The final event of a message kmta cancelled or let expire (``text`` says where)."""
    status, code, enhanced, category = ending.value
    return event_out(config, internal_event(env, status, code, enhanced, text, category, now,
                                            node=node))
