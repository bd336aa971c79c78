"""Delivering a lane's messages (after KumoMTA's dispatcher): connection slots per source IP,
connection attempts per tact, pacing, the delivery loop of one connection, and what each reply
does to its lane and its message (``kmta.policy.verdict.judge`` decides).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection

from aiokafka import TopicPartition

from kmta.pipeline.metrics import SMTP_REPLY_SECONDS, UNEXPECTED_ERRORS, isp_label
from kmta.policy.classify import Classifier
from kmta.policy.speed import Signal
from kmta.policy.verdict import Disposition, Verdict, judge
from schemas import Envelope, RetryRule
from senders.lane import Item, Lane
from senders.records import Records
from senders.suspension import Suspension, suspended
from senders.transport import ConnectFailed, Connection, Outcome, Transport

log = logging.getLogger(__name__)

__all__ = ["Dispatcher"]

CONNECT_BACKOFF_MAX = 60.0  # seconds a lane waits at most after failed connections
PACE_NAP = 0.5  # a worker waiting for a send slot looks again at least this often
IDLE_NAP = 0.5  # an idle connection looks again at least this often

Write = Callable[[TopicPartition, int, list], None]  # (queue partition, offset, records)


class Dispatcher:
    """Connections for the lanes of one node. ``write`` queues a message's outcome records for
    the checkpoint; ``retry_rule(isp)`` is the retry rule for a message whose outcome could
    not be decided; ``owned()`` the queue partitions the node owns (None: all of them), which
    a message put back in its lane must still be in."""

    def __init__(self, transport: Transport, classifier: Classifier, records: Records,
                 write: Write, queue_topic: str,
                 retry_rule: Callable[[str], RetryRule],
                 suspension: Suspension | None = None,
                 owned: Callable[[], Collection[int]] | None = None) -> None:
        self.transport = transport
        self.classifier = classifier
        self.records = records
        self._write = write
        self._topic = queue_topic
        self._retry_rule = retry_rule
        self.suspension = suspension
        self._owned = owned
        self.delivering = 0  # messages handed to a connection, reply not decided yet
        self.delivered = 0
        self.attempts = 0
        self.errors = 0  # messages whose outcome could not be decided (each got one anyway)
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._arrived: dict[tuple[str, str | None], asyncio.Event] = {}

    def kick(self, lane: Lane) -> None:
        """The lane has work or a new state: idle connections look again, and connections
        are opened up to the number the lane's rate keeps busy, within its slots."""
        arrived = self._arrived.get((lane.isp, lane.pool))
        if arrived is not None:
            arrived.set()
        if self.stopping:
            return
        now = time.time()
        if lane.blocked_until(now) is not None or now < lane.connect_backoff_until:
            return
        while lane.workers < lane.wanted_workers():
            pick = lane.pick_ip(now)
            if pick is None:
                return
            lane.workers += 1
            lane.conns[pick.ip] = lane.conns.get(pick.ip, 0) + 1
            t = asyncio.create_task(self._worker(lane, pick.ip))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """No new connections; running ones end after their current message."""
        self.stopping = True
        for lane_event in self._arrived.values():
            lane_event.set()

    async def _idle(self, lane: Lane, until: float) -> None:
        """Wait until the lane is kicked, ``until`` (monotonic) or ``IDLE_NAP``, whichever
        comes first; the caller then checks everything again."""
        ev = self._arrived.setdefault((lane.isp, lane.pool), asyncio.Event())
        ev.clear()
        try:
            await asyncio.wait_for(ev.wait(), max(0.0, min(until - time.monotonic(), IDLE_NAP)))
        except TimeoutError:
            pass

    async def _worker(self, lane: Lane, ip: str | None) -> None:
        conn: Connection | None = None
        sending = lane.rule.sending
        idle_until: float | None = None
        try:
            while not self.stopping:
                if not self._open(lane, ip):
                    break  # a lock or pause, or the cap was lowered: shed a connection
                if not lane.queue:
                    # an open connection waits up to the rule's idle_timeout for the lane's
                    # next message instead of closing now and reconnecting for it (a burst
                    # arrives fetch by fetch, so the queue runs dry in between)
                    if conn is None or not conn.usable:
                        break
                    if idle_until is None:
                        idle_until = time.monotonic() + sending.idle_timeout
                    elif time.monotonic() >= idle_until:
                        break
                    await self._idle(lane, idle_until)
                    continue
                idle_until = None
                if conn is None or not conn.usable or (
                        conn.delivered >= lane.rule.sending.messages_per_connection):
                    if conn is not None:
                        await conn.close()
                        conn = None
                    counter = lane.conn_counter(ip)
                    wait = counter.wait(lane.connections_per_tact())
                    if wait > 0:
                        await asyncio.sleep(min(wait, 1.0))
                        continue
                    counter.take()
                    conn = await self._connect(lane, ip)
                    if conn is None:
                        break
                    continue
                await self._send_one(lane, ip, conn)
        finally:
            lane.workers -= 1
            lane.conns[ip] = max(0, lane.conns.get(ip, 0) - 1)
            if conn is not None:
                await conn.close()
            if lane.queue and not self.stopping:
                asyncio.get_running_loop().call_later(
                    max(0.05, lane.connect_backoff_until - time.time()), self.kick, lane)

    async def _connect(self, lane: Lane, ip: str | None) -> Connection | None:
        """A new connection for the lane's head message; None when it failed: the head
        message gets the failure as its outcome and the lane backs off."""
        sending = lane.rule.sending
        head = lane.queue[0]
        try:
            conn = await self.transport.connect(head.env.mx, ip, sending.connect_timeout,
                                                sending.tls, head.env.tls_policy)
        except ConnectFailed as e:
            lane.connect_failures += 1
            lane.connect_reply = e.outcome.reply
            lane.connect_backoff_until = time.time() + min(
                2 ** lane.connect_failures, CONNECT_BACKOFF_MAX)
            if lane.queue and lane.queue[0] is head:
                lane.queue.popleft()
                await self.outcome(lane, head, e.outcome, ip)
            if self.suspension is not None and suspended(lane, time.time()):
                self.suspension.defer_held(lane, time.time())
            return None
        lane.connect_failures = 0
        return conn

    async def _send_one(self, lane: Lane, ip: str | None, conn: Connection) -> None:
        """Deliver the lane's next message when the source IP's pacer has a slot (else wait
        for the slot, at most ``PACE_NAP``); then each message the connection wrote behind
        the previous one's end of data (``_Next``)."""
        d = lane.pacer(ip).delay()  # this source IP's slots (limits count per IP)
        if d > 0:
            await asyncio.sleep(min(d, PACE_NAP))
            return
        if not lane.queue:
            return
        item: Item | None = self._take(lane, ip)
        while item is not None:
            item = await self._deliver(lane, ip, conn, item)

    def _take(self, lane: Lane, ip: str | None) -> Item:
        """The lane's head message goes now: its send slot taken, counted in flight."""
        lane.pacer(ip).take()
        item = lane.queue.popleft()
        self.delivering += 1
        lane.delivering += 1
        lane.warm_begin(ip)  # a new IP's warm-up cap counts it from now
        return item

    def _landed(self, lane: Lane, ip: str | None) -> None:
        """... and its outcome is decided (or it is back in the lane)."""
        self.delivering -= 1
        lane.delivering -= 1
        lane.warm_end(ip)

    @staticmethod
    def _open(lane: Lane, ip: str | None) -> bool:
        """Whether a connection of ``lane`` from ``ip`` may go on sending: no lock or pause
        of the lane or the IP, and within the connection cap (lowered by a live rule edit or
        a throttle: a connection over it is shed)."""
        return lane.may_send(ip, time.time())  # (computed once per change: senders/lane.py)

    def requeue(self, lane: Lane, item: Item) -> None:
        """Put ``item`` back at the head of its lane to be sent again, unless its partition was
        given away while it was in flight: then its next owner delivers it, and sending it
        here too would deliver it twice (its outcome would be dropped as late)."""
        if self._owned is not None and item.partition not in self._owned():
            log.info("%s not put back in its lane: partition %d given away meanwhile",
                     item.env.id, item.partition,
                     extra={"isp": item.env.isp, "message_id": item.env.id})
            return
        lane.queue.appendleft(item)

    def may_follow(self, lane: Lane, ip: str | None, conn: Connection) -> bool:
        """Whether the lane's next message may go on ``conn`` now, behind the one in flight:
        what the worker loop checks before a message (not stopping, ``_open``,
        ``messages_per_connection`` counting the one in flight as delivered) and a free
        pacing slot: only a message pacing has released goes ahead."""
        return (not self.stopping and bool(lane.queue) and self._open(lane, ip)
                and conn.delivered + 1 < lane.rule.sending.messages_per_connection
                and lane.pacer(ip).delay() == 0)

    async def _deliver(self, lane: Lane, ip: str | None, conn: Connection,
                       item: Item) -> Item | None:
        """One message on ``conn`` and its outcome; the message the connection wrote behind
        it, if any (it was taken off the lane: the next ``deliver`` must be for it)."""
        nxt = _Next(self, lane, ip, conn)
        try:
            t0 = time.monotonic()
            outcome = await conn.deliver(item.env, lane.rule.sending.timeout, nxt)
            if not outcome.attempted:
                # the connection ended before the message had a reply of its own (its
                # commands went behind the previous message's dot): back to the lane as it was
                lane.queue.appendleft(item)
                return nxt.item
            lane.observe_latency(time.monotonic() - t0)
            SMTP_REPLY_SECONDS.labels(isp_label(lane.isp)).observe(time.monotonic() - t0)
            if (not outcome.accepted and outcome.connection_lost and not item.requeued
                    and ((outcome.stage == "mail" and conn.delivered > 0)
                         or outcome.stage == "tls")):
                # the server closed a used channel, or the message needs a verified TLS
                # connection (MTA-STS): no attempt, a new connection
                item.requeued = True
                self.requeue(lane, item)
                return nxt.item
            await self.outcome_or_fallback(lane, item, outcome, ip)
        except BaseException:
            if nxt.item is not None:  # written ahead, never delivered: back to the lane
                self.requeue(lane, nxt.item)
                self._landed(lane, ip)
            raise
        finally:
            self._landed(lane, ip)
        return nxt.item

    async def outcome_or_fallback(self, lane: Lane, item: Item, outcome: Outcome,
                                  ip: str | None) -> None:
        """``outcome``; when deciding it fails unexpectedly, the message still gets one: a
        retry later (or its dead letter), so its offset never holds the partition back."""
        try:
            await self.outcome(lane, item, outcome, ip)
        except Exception as e:
            self.errors += 1
            UNEXPECTED_ERRORS.labels("sender", "outcome").inc()
            log.exception("deciding the outcome of %s failed", item.env.id,
                          extra={"isp": item.env.isp, "message_id": item.env.id})
            outs = self.records.failed(item.env, self._retry_rule(item.env.isp), e,
                                       time.time(), self._topic, item.partition, item.offset)
            self._write(TopicPartition(self._topic, item.partition), item.offset, outs)

    def verdict(self, lane: Lane, outcome: Outcome) -> Verdict:
        if outcome.accepted:
            return Verdict(category="delivered", verdict=Disposition.DELIVERED, suppress=False,
                           speed=Signal.CLEAN)
        return judge(outcome.reply, self.classifier, lane.rule)

    async def outcome(self, lane: Lane, item: Item, outcome: Outcome, ip: str | None) -> None:
        """Count the attempt, let the reply act on the lane at once (a lock rule's count, a
        throttle's slow-down: the brain confirms within moments) and queue the message's
        outcome for the checkpoint. The connection goes on with the next message meanwhile;
        the offset becomes committable only once the write is acknowledged."""
        env = item.env
        now = time.time()
        env.attempt += 1
        lane.attempts += 1
        self.attempts += 1
        v = self.verdict(lane, outcome)
        if v.action == "lock" and v.reply_rule is not None:
            lane.note_lock_reply(v.reply_rule, ip, now)
        if v.speed == Signal.THROTTLE:
            lane.note_throttle(ip, now)
        if not outcome.reply.internal:  # the provider saw it: the brain counts it at ``now``
            lane.warm_note(ip, now)
        if v.verdict == Disposition.DELIVERED:
            lane.delivered += 1
            self.delivered += 1
        outs = self.records.result(env, outcome, v, lane.rule.retry, ip, lane.pool_name, now)
        self._write(TopicPartition(self._topic, item.partition), item.offset, outs)


class _Next:
    """The lane's next message for a connection to write behind the current one's end of
    data (``senders.transport.Ahead``): offered only when ``Dispatcher.may_follow``; once
    taken it is in flight (``item``) and its ``deliver`` comes next."""

    def __init__(self, d: Dispatcher, lane: Lane, ip: str | None, conn: Connection) -> None:
        self._d, self._lane, self._ip, self._conn = d, lane, ip, conn
        self.item: Item | None = None

    def peek(self) -> Envelope | None:
        if self.item is not None or not self._d.may_follow(self._lane, self._ip, self._conn):
            return None
        return self._lane.queue[0].env

    def take(self) -> None:
        self.item = self._d._take(self._lane, self._ip)

    def still_open(self) -> bool:
        return self._d._open(self._lane, self._ip)
