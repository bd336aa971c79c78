"""The decide agent's work on a batch of results records: each delivery event applied to its
ISP's row (``streams/brain.py``), the records to publish, and each ISP's row written to the
brain table once per batch, after its last event of the batch.

Durability: the agent sends the batch's records (state, suppression, audit), then hands the
rows to the table (``write``: the changelog records go to faust's producer), and only then
asks for the next batch, which is when faust acks the batch's results records
(``Stream.take_events``); faust flushes its producer before it commits an offset. So an
offset is committed only after the row that holds its outcome is written. A worker killed
before ``write`` applies the batch again after its restart, and publishes its records again;
one killed after it finds the rows written and skips the events (``Row.first_time``), their
records sent already. (With a write per event, before, the row was written before its records
were sent: a kill between the two left records that were never sent.) What changes is the
number of table writes: one changelog record per ISP and batch instead of one per delivery
event."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kmta.config import ReputationConfig
from kmta.pipeline.metrics import (
    BATCH_APPLY_DELAY,
    EVENT_APPLY_DELAY,
    EVENT_APPLY_DELAY_MAX,
    EVENT_RECORD_DELAY,
    RECORD_BATCH_DELAY,
)
from kmta.pipeline.outputs import Out
from kmta.policy.classify import suppresses
from kmta.policy.kb import KnowledgeBase
from kmta.policy.suppression import record_for
from kmta.policy.warmup import WarmPlan
from schemas import ControlRecord, DeliveryEvent, IspState, Status
from schemas.control import HoldChange
from streams.brain import Row, apply_event, apply_reputation, states_of
from streams.rows import Rows, decode, encode

__all__ = ["BATCH", "BATCH_WAIT", "Decide", "Table", "publish"]

log = logging.getLogger(__name__)

BATCH = 500  # results records per batch at most (faust's commit_every is 500 too)
# seconds a batch waits for more records: what a lock or a speed change may wait before it is
# published, when results come slowly (the senders read the state topic every ~100 ms)
BATCH_WAIT = 0.02


class Table(Protocol):
    """What ``Decide`` uses of the faust table (``faust.Table`` with bytes values)."""

    data: Any

    def get(self, key: str) -> bytes | None: ...

    def send_changelog(self, partition: int | None, key: Any, value: Any) -> Any: ...


class _Latest:
    worst = 0.0


EVENT_APPLY_DELAY_MAX.set_function(lambda: _Latest.worst)


def observe_delay(delay: float, record: float | None = None, started: float | None = None,
                  now: float | None = None) -> None:
    """Record how late the brain applied an event (negative, a clock step: counted as 0);
    with the results record's Kafka timestamp ``record``, the batch's start ``started`` (the
    clock at its first event) and the clock ``now`` of the apply, the delay split into the
    sender side, the way to the batch and the batch's own work."""
    delay = max(0.0, delay)
    EVENT_APPLY_DELAY.observe(delay)
    _Latest.worst = max(_Latest.worst, delay)
    if record is None or started is None or now is None:
        return
    event = now - delay
    EVENT_RECORD_DELAY.observe(max(0.0, record - event))
    RECORD_BATCH_DELAY.observe(max(0.0, started - record))
    BATCH_APPLY_DELAY.observe(max(0.0, now - started))


def publish(row: Row, now: float, kb: KnowledgeBase, topic: str,
            changed: list[IspState] | None = None) -> list[Out]:
    """The state records to send: ``changed`` (those an event changed), else all."""
    outs = []
    for st in changed if changed is not None else states_of(
            row, kb.effective(row.isp, row.rules), now):
        st.updated_at = now
        outs.append(Out(topic, st.to_json(), st.key.encode()))
    return outs


@dataclass
class _Pending:
    """An ISP's row within a batch: the results partition its events came from, whether the
    table had a row for it, its table value when it was read (what a failed event goes back
    to) and the events applied since, with their clock."""

    row: Row
    partition: int
    known: bool
    base: bytes | None
    applied: list[tuple[DeliveryEvent, int, float]] = field(default_factory=list)


class Decide:
    """Applies batches of results records to the brain table (see the module docstring)."""

    def __init__(self, table: Table, kb: KnowledgeBase, reputation: ReputationConfig,
                 node: str, topic: Callable[[str], str], plan: Callable[[], WarmPlan | None],
                 clock: Callable[[], float], rows: Rows | None = None) -> None:
        self.table, self.kb, self.reputation, self.node = table, kb, reputation, node
        self.topic, self.plan, self.clock = topic, plan, clock
        self.rows = rows or Rows()
        self._pending: dict[str, _Pending] = {}
        self._moved: list[tuple[str, int, bytes]] = []  # rows of an earlier partition, encoded
        self._started: float | None = None  # the clock at the current batch's first event

    def batch(self, events: Sequence[Any]) -> list[Out]:
        """Apply ``events`` (faust events: ``.value``, ``.message.partition/.offset``) in order;
        the records to send. The rows they changed wait for ``write``."""
        outs: list[Out] = []
        self._started = None  # the clock of the batch's first event (no extra clock read)
        for ev in events:
            self._one(ev, outs)
        return outs

    def write(self) -> None:
        """Hand every row changed since the last write to the table (its changelog record to
        faust's producer)."""
        for key, partition, value in self._moved:
            self._set(key, partition, value)
        for key, p in self._pending.items():
            if p.applied:
                self._set(key, p.partition, self.rows.put(key, p.row))
        self._pending, self._moved = {}, []

    def _one(self, ev: Any, outs: list[Out]) -> None:
        try:
            event = DeliveryEvent.model_validate_json(ev.value)
        except ValueError:
            return  # results are written by kmta; a foreign record is skipped
        if not event.isp or event.status is Status.QUEUED:
            return
        now = self.clock()
        if self._started is None:
            self._started = now
        if event.status is Status.BOUNCED and suppresses(event.category or ""):
            rec = record_for(Status.BOUNCED, event.to, now, msg_id=event.id,
                             category=event.category, detail=event.response, by=self.node)
            outs.append(Out(self.topic("suppression"), rec.to_json(), rec.key().encode()))
        key, partition, offset = event.isp, ev.message.partition, ev.message.offset
        p = self._pending.get(key)
        if p is not None and p.partition != partition:  # the ISP's results moved partition:
            value = encode(p.row)  # its row so far goes to the old one's changelog too
            if p.applied:
                self._moved.append((key, p.partition, value))
            p = self._pending[key] = _Pending(p.row, partition, p.known, value)
        if p is None:
            stored = self.table.get(key)
            p = self._pending[key] = _Pending(self.rows.take(key, stored), partition,
                                              stored is not None, stored)
        if not p.row.first_time(partition, offset):
            return  # applied before a restart (faust delivers at least once)
        try:
            held = apply_reputation(p.row, event, self.reputation, now)
            changed = apply_event(p.row, event, self.kb, now, self.plan())
        except Exception:
            # as the per-event agent did: this event's outcome is lost, not half applied
            log.exception("results record %s:%s (%s) failed", partition, offset, event.id)
            p.row = self._replay(key, p)
            return
        p.applied.append((event, offset, now))
        record = getattr(ev.message, "timestamp", None)
        observe_delay(now - event.timestamp, record if isinstance(record, (int, float)) else None,
                      self._started, now)
        if changed or not p.known or held:
            outs += publish(p.row, now, self.kb, self.topic("state"),
                            None if not p.known or held else changed)
        p.known = True
        for hkey, why in held:
            log.warning("reputation hold at %s on %s: %s", key, hkey, why, extra={"isp": key})
            outs.append(Out(self.topic("audit"), ControlRecord(
                applied=True, worker=self.node, timestamp=now,
                hold=HoldChange(isp=key, key=hkey, reason=why)).to_json(), None))

    def _replay(self, key: str, p: _Pending) -> Row:
        """The row as it was before the failed event: its value when read, the batch's events
        before it applied again with their clock (the policy is a function of row, event and
        time)."""
        row = decode(p.base) if p.base is not None else Row(isp=key)
        plan = self.plan()
        for event, offset, now in p.applied:
            row.first_time(p.partition, offset)
            apply_reputation(row, event, self.reputation, now)
            apply_event(row, event, self.kb, now, plan)
        return row

    def _set(self, key: str, partition: int, value: bytes) -> None:
        """``table[key] = value`` with the changelog record on the partition of the ISP's
        events, as faust's ``Table.__setitem__`` does inside a stream (a batch has no current
        event)."""
        self.table.send_changelog(partition, key, value)
        self.table.data[key] = value
