"""A lane: the messages of one ISP (and pool) on this node, and the connections serving them.

The lane enforces what the brain decided (pause, lock, speed, temporary connection caps) and the
ISP's sending rule, for this node's share of the ISP's partitions. Limits count per source IP,
as providers count them: each source IP has its own pacer at ``speed * share / tact`` messages
per second, so two source IPs send twice as much as one, each within the learned speed. The
speed is the IP's own level (its ``<isp>|<ip>`` state record, speed.per_ip), else the ISP's.

Between a provider's reply and the brain's answer on the state topic some hundreds of
milliseconds pass; for the replies that must stop sending at once (a lock rule reaching its
threshold) the lane applies a provisional local lock until the brain confirms or contradicts it.

Every message asks whether its lane and source IP may send (intake, kick, the worker loop, a
message riding behind another): the answer is computed once per change of what it depends on
(``_Gate``), not re-read per message: a profile showed those checks at ~7 % of a sender's CPU.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from kmta.policy.kb import EffectiveRule
from kmta.policy.locks import Hits, lock_until, record
from kmta.policy.reply import Reply
from kmta.policy.reputation import held_by
from kmta.policy.speed import DEEP_ROUND
from kmta.policy.warmup import Pending, free_at, pending, remaining
from schemas import Envelope, IspState, WarmupStatus
from schemas.rules import ReplyRule
from senders.pacing import Pacer, TactCounter

__all__ = ["Item", "Lane", "LocalLock", "Pick", "Slow", "connection_share", "slow_holds",
           "slowed"]

WARM_SKEW = 2.0  # seconds: results of several nodes reach the brain at most this far apart

# A provisional lock the brain has not confirmed is dropped once a state published this long
# after it arrives without the lock (the brain saw the reply and decided otherwise, e.g. an
# operator unlocked in the meantime).
CONFIRM_GRACE = 5.0

# A throttle reply slows the replying source IP at once, to this share of its rate, until the
# brain's lower speed arrives (see ``slow_holds``) or LOCAL_SLOW_GRACE passes: the brain
# answers within some hundreds of milliseconds, and a provider counting throttled attempts
# (Yahoo's TSS04 -> TS03 block) counts every one sent at the old speed meanwhile. 0.1, not
# 0.3: a deep bucket (a per-minute count) is first refused at 3-7 x its capacity, where 0.3 of
# the rate is still above it and the node was refused again every ~0.1 s
# (docs/adaptive-speed.md, deep buckets).
LOCAL_SLOW = 0.1
LOCAL_SLOW_GRACE = 2.0

# With several nodes on one source IP, a raised speed applies this long after the brain
# published it, at one instant on every node (they pace on one grid; see senders/pacing.py).
RAISE_DELAY = 0.3

POOL = "@pool"  # the key of a pool-scope lock among a lane's provisional locks (not an IP)


# A source IP's local slow-down: when a throttle reply slowed it, its speed then, and the
# throttles since (the first counts).
Slow = tuple[float, float, int]


def slowed(slow: Slow | None, speed: float, now: float) -> Slow:
    """A source IP's slow-down after a throttle reply at ``now``: a new one from ``speed``
    (its speed now) when it was not slowed (``slow`` None), else ``slow`` with one more
    throttle counted (a deep bucket's in-flight refusals, which ``slow_holds`` weighs). One
    function for ``Lane.note_throttle`` and the closed loop (tests/speedloop.py), so the
    simulated nodes count as the senders do."""
    if slow is None:
        return (now, speed, 1)
    return (slow[0], slow[1], slow[2] + 1)


def slow_holds(brain_speed: float, slowed_from: float, throttles: int) -> bool:
    """Whether a local slow-down outlives a speed the brain published since: a speed not
    under ``slowed_from`` (the speed when the first throttle came) is no answer to it yet.
    A lower one replaces it, unless this node had more than ``DEEP_ROUND`` throttles since it
    slowed (``throttles`` counts the first): a deep bucket refusing every message in flight,
    where the brain's first cut (e.g. 766 -> 500/s, the knee's x 0.75) is still far above
    the capacity and its deeper ones follow within moments; following the first one sent a
    second burst at 500/s (docs/adaptive-speed.md, step 18). Then the slow-down ends only
    once the brain's speed is under its local rate (``LOCAL_SLOW`` of ``slowed_from``) or at
    ``LOCAL_SLOW_GRACE``. A shallow bucket's knee gives one or two: the brain's cut is the
    answer, and holding the slow-down the whole grace cost 2-8 points of utilisation."""
    if brain_speed >= slowed_from:
        return True
    return throttles > DEEP_ROUND and brain_speed > slowed_from * LOCAL_SLOW


@dataclass
class Item:
    env: Envelope
    partition: int
    offset: int
    requeued: bool = False


@dataclass(frozen=True)
class Pick:
    """A source IP chosen for a new connection (``ip`` None: the host's default address)."""

    ip: str | None


@dataclass
class LocalLock:
    """A lock this node applied itself, ahead of the brain's state."""

    until: float
    set_at: float


class _Gate:
    """What ``Lane.may_send`` and friends answer, computed once: valid while the lane's
    ``version`` (bumped by everything that changes a lock, a pause, a state, the rule or the
    slots), its state objects and rule are the same, and from ``at`` (when it was computed)
    until ``until``, the first moment a lock ends after it (locks only end with time; none
    begins). Not used for a lane with new IPs
    warming up: their caps move with each message and the clock."""

    __slots__ = ("at", "blocked", "max_conns", "open", "pool_state", "rate", "rule", "state",
                 "until", "version")

    def __init__(self, lane: Lane, now: float) -> None:
        self.at = now
        self.version = lane.version
        self.state = lane.state
        self.pool_state = lane.pool_state
        self.rule = lane.rule
        usable = lane._usable(now)  # (each IP's check once: the three below need it)
        self.blocked = lane._blocked(now, whole_only=False, usable=usable) is not None
        self.open = frozenset(usable)
        self.max_conns = lane._max_connections_per_ip()
        self.rate = lane._rate_per_second(now, usable)
        ends = [lk.until for lk in lane.local_locks.values()]
        ends += [st.locked_until for st in (lane.state, lane.pool_state,
                                            *(lane.ip_states.get(ip or "")
                                              for ip in lane.source_ips))
                 if st is not None and st.locked_until is not None]
        self.until = min((t for t in ends if t > now), default=float("inf"))

    def valid(self, lane: Lane, now: float) -> bool:
        return (self.at <= now < self.until and self.version == lane.version
                and self.state is lane.state and self.pool_state is lane.pool_state
                and self.rule is lane.rule)


def connection_share(total: int, slot: int, k: int) -> int:
    """Connections partition ``slot`` of ``k`` may use out of ``total``: an exact split."""
    return total // k + (1 if slot < total % k else 0)


@dataclass
class Lane:
    isp: str
    pool: str | None
    rule: EffectiveRule
    source_ips: list[str | None]
    queue: deque[Item] = field(default_factory=deque)
    state: IspState | None = None
    ip_states: dict[str, IspState] = field(default_factory=dict)
    pool_name: str | None = None  # the pool whose source IPs this lane uses (None: none)
    pool_state: IspState | None = None
    slots: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (slot, k)
    conns: dict[str | None, int] = field(default_factory=dict)
    workers: int = 0
    delivering: int = 0  # messages handed to a connection, reply not decided yet
    connect_backoff_until: float = 0.0
    connect_failures: int = 0  # failed connection attempts in a row (see senders/suspension.py)
    connect_reply: Reply | None = None  # the last failed attempt's (kmta's own) reply
    delivered: int = 0
    attempts: int = 0
    latency: float = 0.2  # seconds per SMTP transaction (moving average)
    # provisional locks: key None = the whole ISP, POOL = this lane's pool, else a source IP
    local_locks: dict[str | None, LocalLock] = field(default_factory=dict)
    local_hits: dict[tuple[str, str | None], Hits] = field(default_factory=dict)
    # source IP -> its local slow-down (``Slow``: since when, from which speed, throttles)
    local_slow: dict[str | None, Slow] = field(default_factory=dict)
    # IP warm-up: the new source IPs (config) -> their snapshot before the brain's first one;
    # per IP, the times of this node's attempts since, and its messages in flight
    warm_start: dict[str, WarmupStatus] = field(default_factory=dict)
    warm_sent: dict[str | None, deque[float]] = field(default_factory=dict)
    warm_inflight: dict[str | None, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.version = 0  # bumped by every change ``_Gate`` depends on (see ``changed``)
        self._gate: _Gate | None = None
        self.pacers: dict[str | None, Pacer] = {}
        self.tact_conns: dict[str | None, TactCounter] = {}
        self.refresh()

    # -- what the brain decided -------------------------------------------------------------
    def share(self) -> float:
        """This node's share of the ISP: owned partitions / the ISP's partitions."""
        if not self.slots:
            return 1.0
        k = next(iter(self.slots.values()))[1]
        return min(1.0, len(self.slots) / k)

    def speed(self, ip: str | None = None) -> float:
        """Messages per tact per source IP, all nodes together: the level of source IP ``ip``
        when the brain published one (speed.per_ip), else the whole ISP's."""
        sp = self.rule.speed
        speed = sp.start or sp.min
        own = self.ip_states.get(ip) if ip is not None else None
        if own is not None and own.speed is not None:
            speed = own.speed
        elif self.state is not None and self.state.speed is not None:
            speed = self.state.speed
        # a live edit of max applies at once; no floor: a throttle rule's rate may be below min
        return speed if sp.max is None else min(speed, sp.max)

    def _speed_at(self, ip: str | None) -> float | None:
        """When the brain published the speed ``ip`` paces at (None: nothing published)."""
        own = self.ip_states.get(ip) if ip is not None else None
        if own is not None and own.speed is not None:
            return own.updated_at
        return self.state.updated_at if self.state is not None else None

    def ip_rate(self, ip: str | None = None) -> float:
        """Messages per second source IP ``ip`` of this node may send."""
        return self.speed(ip) * self.share() / self.rule.sending.tact

    def changed(self) -> None:
        """Something ``_Gate`` depends on changed (a state, a lock, the rule, the slots, the
        new IPs): the next message computes the lane's may-send answer afresh."""
        self.version += 1

    def _gate_at(self, now: float) -> _Gate | None:
        """The cached may-send answer at ``now`` (None: a lane with new IPs: not cached)."""
        if self.warm_start:
            return None
        g = self._gate
        if g is None or not g.valid(self, now):
            g = self._gate = _Gate(self, now)
        return g

    def may_send(self, ip: str | None, now: float) -> bool:
        """Whether a connection from ``ip`` may go on sending: no lock or pause of the lane or
        the IP, and within the connection cap (lowered by a live rule edit or a throttle: a
        connection over it is shed)."""
        g = self._gate_at(now)
        if g is None or ip not in self.source_ips:
            return (self._blocked(now, whole_only=False) is None
                    and not self._ip_blocked(ip, now)
                    and self.conns.get(ip, 0) <= self._max_connections_per_ip())
        return not g.blocked and ip in g.open and self.conns.get(ip, 0) <= g.max_conns

    def rate_per_second(self) -> float:
        """Messages per second of this node over every source IP that may send now."""
        now = time.time()
        g = self._gate_at(now)
        return g.rate if g is not None else self._rate_per_second(now)

    def _usable(self, now: float) -> list[str | None]:
        """The source IPs not blocked at ``now`` (see ``_ip_blocked``), in order."""
        return [ip for ip in self.source_ips if not self._ip_blocked(ip, now)]

    def _rate_per_second(self, now: float, usable: list[str | None] | None = None) -> float:
        if usable is None:
            usable = self._usable(now)
        return sum(self.ip_rate(ip) for ip in usable) if usable else self.ip_rate(
            self.source_ips[0] if self.source_ips else None)

    def messages_per_tact(self) -> float:
        return self.rate_per_second() * self.rule.sending.tact

    def max_connections_per_ip(self) -> int:
        g = self._gate_at(time.time())
        return g.max_conns if g is not None else self._max_connections_per_ip()

    def _max_connections_per_ip(self) -> int:
        total = self.rule.sending.max_connections
        if self.state is not None and self.state.max_connections:
            total = min(total, self.state.max_connections)
        if not self.slots:
            return total
        return sum(connection_share(total, s, k) for s, k in self.slots.values())

    def connections_per_tact(self) -> float | None:
        """Connection attempts per tact, per source IP, for this node's share."""
        cpt = self.rule.sending.connections_per_tact
        return None if cpt is None else max(1.0, cpt * self.share())

    def blocked_until(self, now: float) -> float | None:
        """When sending may start again (None = not blocked; inf = paused until resumed)."""
        g = self._gate_at(now)
        if g is not None and not g.blocked:
            return None
        return self._blocked(now, whole_only=False)  # (when: the value moves with ``now``)

    def isp_blocked_until(self, now: float) -> float | None:
        """Like ``blocked_until``, counting only what stops the whole ISP (not a pool or the
        lane's source IPs): messages of other pools on the same partition may still go."""
        return self._blocked(now, whole_only=True)

    def _blocked(self, now: float, whole_only: bool,
                 usable: list[str | None] | None = None) -> float | None:
        """``usable``: ``_usable(now)`` when the caller has it already."""
        until: float | None = None
        scopes = ((self.state, None),) if whole_only else ((self.state, None),
                                                           (self.pool_state, POOL))
        for st, key in scopes:
            if st is not None and st.paused:
                return float("inf")
            local = self.local_locks.get(key)
            if local is not None and local.until > now:
                until = max(until or 0.0, local.until)
            if st is not None and st.locked(now):
                until = max(until or 0.0, st.locked_until or 0.0)
        if not whole_only and (not usable if usable is not None
                               else all(self._ip_blocked(ip, now) for ip in self.source_ips)):
            # every IP locked, paused or (new) out of its warm-up caps: look again in 5 s, or
            # when the first warm-up window opens
            until = max(until or 0.0, min(self._warm_free_at(ip, now) for ip in self.source_ips))
        return until

    def _own_level(self, ip: str | None) -> bool:
        own = self.ip_states.get(ip) if ip is not None else None
        return own is not None and own.speed is not None

    def ip_blocked(self, ip: str | None, now: float) -> bool:
        g = self._gate_at(now)
        if g is None or ip not in self.source_ips:
            return self._ip_blocked(ip, now)
        return ip not in g.open

    def _ip_blocked(self, ip: str | None, now: float) -> bool:
        local = self.local_locks.get(ip) if ip is not None else None
        if local is not None and local.until > now:
            return True
        st = self.ip_states.get(ip or "")
        return (st is not None and (st.paused or st.locked(now))) or self.warm_capped(ip, now)

    # -- IP warm-up (kmta/policy/warmup.py) -------------------------------------------------
    def warm_snapshot(self, ip: str | None) -> WarmupStatus | None:
        """A new IP's warm-up as the brain last published it (None: not a new IP)."""
        if ip is None or ip not in self.warm_start:
            return None
        st = self.ip_states.get(ip)
        return st.warmup if st is not None and st.warmup is not None else self.warm_start[ip]

    def _warm_pending(self, ip: str | None, snap: WarmupStatus, now: float) -> Pending:
        sent = self.warm_sent.get(ip)
        # counted by the brain by now; ``counted_at`` is the latest attempt it counted of any
        # node, and another node's later result may be counted before this node's earlier one
        # (partitions are read in any order): only attempts WARM_SKEW older count as counted
        while sent and sent[0] <= snap.counted_at - WARM_SKEW:
            sent.popleft()
        return pending(snap, now, sent or (), self.warm_inflight.get(ip, 0))

    def warm_capped(self, ip: str | None, now: float) -> bool:
        """A new IP that used up today's or this hour's cap at this ISP: the pool's other
        IPs take its traffic."""
        snap = self.warm_snapshot(ip)
        return snap is not None and remaining(snap, now, self._warm_pending(ip, snap, now),
                                              self.share()) == 0

    def _warm_free_at(self, ip: str | None, now: float) -> float:
        snap = self.warm_snapshot(ip)
        if snap is None or not self.warm_capped(ip, now):
            return now + 5.0
        return max(now + 5.0, free_at(snap, now, self._warm_pending(ip, snap, now)))

    def warm_begin(self, ip: str | None) -> None:
        """A message of ``ip`` was handed to a connection."""
        self.warm_inflight[ip] = self.warm_inflight.get(ip, 0) + 1

    def warm_end(self, ip: str | None) -> None:
        """... and its outcome is decided."""
        self.warm_inflight[ip] = max(0, self.warm_inflight.get(ip, 0) - 1)

    def warm_note(self, ip: str | None, now: float) -> None:
        """An attempt of ``ip`` the provider answered; its result event carries ``now``, and
        the brain's snapshots say up to which time they counted."""
        snap = self.warm_snapshot(ip)
        if snap is not None and snap.daily_cap is not None:  # (a warm IP has no caps)
            self.warm_sent.setdefault(ip, deque()).append(now)

    def cleared(self, env: Envelope) -> bool:
        cb = self.state.clear_before if self.state is not None else None
        return cb is not None and env.accepted_at <= cb

    def held(self, env: Envelope) -> str | None:
        """Why a reputation hold of the brain's (its campaign or sending domain at this ISP)
        stops ``env``, else None."""
        return held_by(self.state.holds if self.state is not None else None, self.isp,
                       env.campaign, env.sender)

    def refresh(self) -> None:
        """Apply the current speed to every source IP's pacer; forget ended local locks."""
        self.changed()  # (called after a new state, rule or slots)
        now = time.time()
        for key in [k for k, lk in self.local_locks.items() if lk.until <= now]:
            del self.local_locks[key]
        for ip in [k for k, (at, _, _) in self.local_slow.items()
                   if at + LOCAL_SLOW_GRACE <= now]:
            del self.local_slow[ip]
        grid = self.grid()
        for ip in self.source_ips:
            rate = self.ip_rate(ip)
            ip_rate = rate * (LOCAL_SLOW if ip in self.local_slow else 1.0)
            pacer = self.pacers.get(ip)
            if pacer is None:
                # the wall clock: the nodes sharing a source IP interleave on one grid
                self.pacers[ip] = Pacer(ip_rate, clock=time.time, grid=grid)
                self.pacers[ip].grid_rate = rate
                self.tact_conns[ip] = TactCounter(self.rule.sending.tact)
            else:
                pacer.grid = grid
                at = self._speed_at(ip) if grid is not None else None
                raise_at = at + RAISE_DELAY if at is not None else None
                pacer.set_rate(ip_rate, raise_at, rate)

    def grid(self) -> tuple[frozenset[int], int] | None:
        """The pacing grid this node's slots of the ISP's partitions own (see ``Pacer``)."""
        if not self.slots:
            return None
        k = next(iter(self.slots.values()))[1]
        return (frozenset(s for s, _ in self.slots.values()), k) if k > 1 else None

    def pacer(self, ip: str | None) -> Pacer:
        if ip not in self.pacers:
            self.refresh()
        return self.pacers[ip]

    def conn_counter(self, ip: str | None) -> TactCounter:
        if ip not in self.tact_conns:
            self.refresh()
        return self.tact_conns[ip]

    # -- provisional locks ------------------------------------------------------------------
    def note_lock_reply(self, reply_rule: ReplyRule, ip: str | None, now: float) -> bool:
        """A reply matched a lock rule: count it like the brain does (same threshold and
        window) and lock locally when it triggers; True when a local lock was set. This node's
        matches are a subset of what the brain counts, so a local trigger never locks where the
        brain would not."""
        scope: str | None = None
        if reply_rule.scope == "source_ip" and ip is not None:
            scope = ip
        elif reply_rule.scope == "pool" and self.pool_name:
            scope = POOL
        key = (reply_rule.name, scope)
        hits, triggered = record(self.local_hits.get(key, Hits()), reply_rule, now)
        self.local_hits[key] = hits
        if not triggered:
            return False
        until = lock_until(reply_rule, now)
        old = self.local_locks.get(scope)
        if old is None or old.until < until:
            self.local_locks[scope] = LocalLock(until=until, set_at=now)
            self.changed()
        return True

    def note_throttle(self, ip: str | None, now: float) -> bool:
        """A provider throttled ``ip``: slow it at once (once, until the brain answers, see
        ``slow_holds``, or the grace passes); True when this reply slowed it. The throttles
        while it is slowed are counted (a deep bucket's in-flight refusals)."""
        slow = self.local_slow.get(ip)
        self.local_slow[ip] = slowed(slow, self.speed(ip), now)
        if slow is not None:
            return False
        self.refresh()
        return True

    def brain_state(self, st: IspState, now: float) -> None:
        """Take a state from the brain; it confirms (or, later, contradicts) local locks."""
        self.changed()
        scope = st.source_ip
        if scope:
            self.ip_states[scope] = st
            slow = self.local_slow.get(scope)
            if st.speed is not None and slow is not None and not slow_holds(st.speed, *slow[1:]):
                del self.local_slow[scope]  # the brain's level of this IP is the lower
        elif st.pool:
            if st.pool != self.pool_name:
                return
            scope = POOL
            self.pool_state = st
        else:
            self.state = st
            if st.speed is not None:  # a brain's speed under the local rate replaces it
                self.local_slow = {ip: v for ip, v in self.local_slow.items()
                                   if slow_holds(st.speed, *v[1:]) or self._own_level(ip)}
        if st.locked(now):  # the brain's count restarted when it locked: so does ours
            self.local_hits = {k: v for k, v in self.local_hits.items() if k[1] != scope}
        local = self.local_locks.get(scope)
        if local is None:
            return
        confirmed = st.locked_until is not None and st.locked_until >= local.until - 1.0
        if confirmed or st.updated_at >= local.set_at + CONFIRM_GRACE or local.until <= now:
            # the brain's state rules from here, including an operator's early unlock
            del self.local_locks[scope]

    # -- connection slots -------------------------------------------------------------------
    def pick_ip(self, now: float) -> Pick | None:
        """The source IP with a free connection slot and the fewest connections (None: no
        source IP has a free slot)."""
        cap = self.max_connections_per_ip()
        best: Pick | None = None
        for ip in self.source_ips:
            if self.ip_blocked(ip, now):
                continue
            used = self.conns.get(ip, 0)
            if used < cap and (best is None or used < self.conns.get(best.ip, 0)):
                best = Pick(ip)
        return best

    def keep(self, items: list[Item]) -> None:
        """Hold only ``items`` (in order): the others were parked, ended or given away."""
        self.queue = deque(items)

    def wanted_workers(self) -> int:
        """As many connections as the allowed rate keeps busy (rate x transaction time), never
        more than the backlog needs: few, busy connections look like careful sending."""
        if not self.queue:
            return 0
        if self.connect_failures:
            return 1  # the destination failed to answer: one connection finds out if it is back
        by_rate = int(self.rate_per_second() * self.latency * 1.5) + len(self.source_ips)
        return max(1, min(len(self.queue), by_rate))

    def observe_latency(self, seconds: float) -> None:
        self.latency = 0.8 * self.latency + 0.2 * max(seconds, 0.001)

