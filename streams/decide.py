"""The decide agent's work on a batch of results records: each delivery event applied to its
ISP's row (``streams/brain.py``), the records to publish, and each ISP's row written to the
brain table once per batch, after its last event of the batch.

Durability is the per-event agent's: the agent hands the rows to the table (the changelog
records go to faust's producer) before it asks for the next batch, and only then are the
batch's records acked (``Stream.take_events``); faust flushes its producer before it commits an
offset. A worker killed at any moment restarts from the last committed offset with rows that
hold at least every event up to it; events applied and written again after that are told by
``Row.first_time``. What changes is the number of table writes: one changelog record per ISP
and batch instead of one per delivery event."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kmta.config import ReputationConfig
from kmta.pipeline.outputs import Out
from kmta.policy.classify import suppresses
from kmta.policy.kb import KnowledgeBase
from kmta.policy.suppression import record_for
from kmta.policy.warmup import WarmPlan
from schemas import ControlRecord, DeliveryEvent, IspState, Status
from schemas.control import HoldChange
from streams.brain import Row, apply_event, apply_reputation, states_of
from streams.rows import Rows

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
    table had a row for it, and the events applied (with their clock) since it was read."""

    row: Row
    partition: int
    known: bool
    applied: list[tuple[DeliveryEvent, int, float]] = field(default_factory=list)


class Decide:
    """Applies batches of results records to the brain table (see the module docstring)."""

    def __init__(self, table: Table, kb: KnowledgeBase, reputation: ReputationConfig,
                 node: str, topic: Callable[[str], str], plan: Callable[[], WarmPlan | None],
                 clock: Callable[[], float], rows: Rows | None = None) -> None:
        self.table, self.kb, self.reputation, self.node = table, kb, reputation, node
        self.topic, self.plan, self.clock = topic, plan, clock
        self.rows = rows or Rows()

    def batch(self, events: Sequence[Any]) -> list[Out]:
        """Apply ``events`` (faust events: ``.value``, ``.message.partition/.offset``) in order;
        every row they changed is in the table when this returns. The records to send."""
        outs: list[Out] = []
        pending: dict[str, _Pending] = {}
        for ev in events:
            self._one(ev, pending, outs)
        for isp, p in pending.items():
            self._write(isp, p)
        return outs

    def _one(self, ev: Any, pending: dict[str, _Pending], outs: list[Out]) -> None:
        try:
            event = DeliveryEvent.model_validate_json(ev.value)
        except ValueError:
            return  # results are written by kmta; a foreign record is skipped
        if not event.isp or event.status is Status.QUEUED:
            return
        now = self.clock()
        if event.status is Status.BOUNCED and suppresses(event.category or ""):
            rec = record_for(Status.BOUNCED, event.to, now, msg_id=event.id,
                             category=event.category, detail=event.response, by=self.node)
            outs.append(Out(self.topic("suppression"), rec.to_json(), rec.key().encode()))
        key, partition, offset = event.isp, ev.message.partition, ev.message.offset
        p = pending.get(key)
        if p is not None and p.partition != partition:  # the ISP's results moved partition
            self._write(key, pending.pop(key))
            p = None
        if p is None:
            stored = self.table.get(key)
            p = pending[key] = _Pending(self.rows.take(key, stored), partition,
                                        stored is not None)
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
        """The row as it was before the failed event: read again, the batch's events before it
        applied again with their clock (the policy is a function of row, event and time)."""
        row = self.rows.take(key, self.table.get(key))
        plan = self.plan()
        for event, offset, now in p.applied:
            row.first_time(p.partition, offset)
            apply_reputation(row, event, self.reputation, now)
            apply_event(row, event, self.kb, now, plan)
        return row

    def _write(self, key: str, p: _Pending) -> None:
        """``table[key] = row`` with the changelog record on the partition of the ISP's events,
        as faust's ``Table.__setitem__`` does inside a stream (a batch has no current event)."""
        if not p.applied:
            return
        value = self.rows.put(key, p.row)
        self.table.send_changelog(p.partition, key, value)
        self.table.data[key] = value
