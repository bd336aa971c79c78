"""The brain's per-ISP decisions: one table row per ISP, updated from delivery events and
operator commands, published as IspState records. Plain functions over plain data; the faust
agents only decode, call these, store the row and send what they return."""
from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import Field

from kmta.config import ReputationConfig
from kmta.errors import ConfigError
from kmta.policy.classify import suppresses
from kmta.policy.ipspeed import for_new_ip, idle, lowest
from kmta.policy.kb import EffectiveRule, KnowledgeBase
from kmta.policy.locks import Hits, lock_until, record
from kmta.policy.reply import Reply
from kmta.policy.reply_rules import match_reply
from kmta.policy.reputation import RateBook, hold_keys, new_holds
from kmta.policy.speed import Signal, SpeedState, initial, observe, signal_for
from kmta.policy.warmup import WarmPlan, WarmState, begin, publish_due, status, utc_day
from kmta.policy.warmup import observe as warm_observe
from schemas import ControlAction, ControlCommand, DeliveryEvent, IspState, Status, WarmupStatus
from schemas.base import Model
from schemas.control import ALL_ISPS

__all__ = ["Row", "apply_command", "apply_event", "apply_reputation", "states_of",
           "warmup_mark"]


class ScopeRow(Model):
    paused: bool = False
    locked_until: float | None = None
    lock_reason: str | None = None
    lock_reply: str | None = None
    hits: dict[str, list[float]] = Field(default_factory=dict)


class Row(Model):
    """Everything the brain keeps for one ISP (the table value)."""

    isp: str
    whole: ScopeRow = Field(default_factory=ScopeRow)
    ips: dict[str, ScopeRow] = Field(default_factory=dict)
    pools: dict[str, ScopeRow] = Field(default_factory=dict)
    speed: dict[str, Any] | None = None  # the level shared by the IPs (speed.per_ip off)
    # speed.per_ip: source IP -> its own level (SpeedState fields; defaults left out)
    ip_speed: dict[str, dict[str, Any]] = Field(default_factory=dict)
    ip_seen: dict[str, float] = Field(default_factory=dict)  # source IP -> its last event
    throttle_until: float | None = None
    throttle_rate: float | None = None
    max_connections: int | None = None
    clear_before: float | None = None
    rules: dict[str, Any] | None = None
    rules_version: int = 0
    updated_at: float = 0.0
    applied: tuple[int, int] | None = None  # (partition, offset) of the last results record
    # reputation: hourly counts per 'campaign:<c>' / 'domain:<d>' at this ISP, the holds
    # placed and when an operator released each
    rates: dict[str, dict[int, list[int]]] = Field(default_factory=dict)
    holds: dict[str, str] = Field(default_factory=dict)
    released: dict[str, float] = Field(default_factory=dict)
    # control command ids applied within control.max_age (replay refusal, kmta.control.remember)
    commands: dict[str, float] = Field(default_factory=dict)
    commands_floor: float = 0.0
    # IP warm-up: new source IP -> its WarmState at this ISP, and the snapshot last published
    warm: dict[str, dict[str, Any]] = Field(default_factory=dict)
    warm_pub: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def first_time(self, partition: int, offset: int) -> bool:
        """True (and noted) unless this results record was applied already: after a crash
        faust delivers the records since its last commit again, and applying a lock trigger
        twice would extend the lock. Results of one ISP share a partition, in order."""
        if self.applied is not None and self.applied[0] == partition and offset <= self.applied[1]:
            return False
        self.applied = (partition, offset)
        return True


_SPEED_FIELDS = frozenset(f.name for f in dataclasses.fields(SpeedState))
# fields stored only when they differ from their default (a row holds one state per source IP)
_SPEED_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SpeedState)
                   if f.default is not dataclasses.MISSING and f.name != "mode"}


def _unpack(stored: dict[str, Any]) -> SpeedState:
    known = {k: v for k, v in stored.items() if k in _SPEED_FIELDS}
    for name in ("sources", "cut_ips"):
        if name in known:
            known[name] = tuple(known[name])
    for name in ("recent", "cut_last"):
        if name in known:
            known[name] = tuple(tuple(x) for x in known[name])
    return SpeedState(**known)  # observe() re-clamps into the rule's bounds


_NO_DEFAULT = object()


def _pack(s: SpeedState) -> dict[str, Any]:
    get = _SPEED_DEFAULTS.get
    return {k: v for k, v in vars(s).items() if get(k, _NO_DEFAULT) != v}


def _speed(row: Row, rule: EffectiveRule, now: float) -> SpeedState | None:
    """The level the IPs share (None: none yet); a row of the older controller is learned."""
    if row.speed is None:
        return None
    if "mode" not in row.speed:  # a row of the older controller: its speed is learned
        return initial(rule.speed, now, learned=float(row.speed.get("speed", rule.speed.min)))
    return _unpack(row.speed)


def _ip_speed(row: Row, rule: EffectiveRule, ip: str, now: float) -> SpeedState:
    """The level of source IP ``ip``; a new IP starts from what the ISP knows
    (``kmta.policy.ipspeed.for_new_ip``)."""
    stored = row.ip_speed.get(ip)
    if stored is not None:
        return _unpack(stored)
    levels = {k: _unpack(v) for k, v in row.ip_speed.items()}
    return for_new_ip(levels, rule.speed, now, _speed(row, rule, now))


def _count_warmup(row: Row, ev: DeliveryEvent, plan: WarmPlan, outcome: Signal,
                  at: float, now: float) -> None:
    """Count an attempt of a new source IP in its warm-up; publish a snapshot when due."""
    for ended in [ip for ip in row.warm if ip not in plan.ips]:  # its warm-up was ended
        row.warm.pop(ended)
        row.warm_pub.pop(ended, None)
    ip = ev.source_ip
    if not ip or ip not in plan.ips or ev.internal:
        return
    sched = plan.schedules.for_isp(row.isp)
    known = row.warm.get(ip)
    ws = WarmState(**known) if known else None
    if ws is None or ws.started != plan.ips[ip]:  # new, or started again (kmta ip warmup)
        ws = begin(plan.ips[ip], now, sched)
    ws = warm_observe(ws, sched, outcome, at)
    row.warm[ip] = dataclasses.asdict(ws)
    snap = status(ws, sched)
    old = row.warm_pub.get(ip)
    if publish_due(WarmupStatus.model_validate(old) if old else None, snap):
        row.warm_pub[ip] = snap.model_dump(mode="json")


def apply_event(row: Row, ev: DeliveryEvent, kb: KnowledgeBase, now: float,
                warmup: WarmPlan | None = None) -> list[IspState]:
    """Update the row from one delivery event; the state records it changed (empty: none).
    ``warmup``: the new source IPs, whose attempts count in their warm-up. Only the records
    an event can change are built and compared: the ISP's, the event's source IP's and
    pool's (and those of IPs whose warm-up ended)."""
    if ev.status not in (Status.DELIVERED, Status.DEFERRED, Status.BOUNCED, Status.EXPIRED):
        return []
    if ev.code is None and not ev.internal:
        return []
    rule = kb.effective(row.isp, row.rules)
    ips = [ip for ip in row.warm if warmup is not None and ip not in warmup.ips]
    if ev.source_ip and ev.source_ip not in ips:
        ips.append(ev.source_ip)
    # levels of IPs without an event for a day go (their records are published blank)
    gone = [ip for ip in idle(row.ip_seen, set(row.ip_speed) | set(row.ip_seen), now)
            if ip != ev.source_ip]
    ips += [ip for ip in gone if ip not in ips]
    pool = ev.pool or None
    before = _states_for(row, rule, now, ips, pool)
    for ip in gone:
        row.ip_speed.pop(ip, None)
        row.ip_seen.pop(ip, None)
    if ev.source_ip:
        row.ip_seen[ev.source_ip] = now
    reply = Reply(code=ev.code, enhanced_code=ev.enhanced_code, text=ev.response,
                  internal=ev.internal)
    # replies are matched with the rules of the pool that sent (it may narrow them); the
    # learned speed below is the ISP's
    pool_rule = kb.effective(row.isp, row.rules, ev.pool) if ev.pool else rule
    matched = match_reply(reply, pool_rule) if ev.status is not Status.DELIVERED else None
    action = matched.action if matched else None
    if matched is not None and action in ("lock", "throttle"):
        scope = row.whole
        if matched.scope == "source_ip" and ev.source_ip:
            scope = row.ips.setdefault(ev.source_ip, ScopeRow())
        elif matched.scope == "pool" and ev.pool:
            scope = row.pools.setdefault(ev.pool, ScopeRow())
        hits, triggered = record(Hits(tuple(scope.hits.get(matched.name, ()))), matched, now)
        scope.hits[matched.name] = list(hits.times)
        if triggered:
            until = lock_until(matched, now)
            if action == "lock":
                if scope.locked_until is None or scope.locked_until < until:
                    scope.locked_until = until
                    scope.lock_reason = matched.name
                    scope.lock_reply = ev.response[:300]
            else:
                row.throttle_until = max(row.throttle_until or 0, until)
                row.throttle_rate = matched.rate
                row.max_connections = matched.max_connections
        else:
            action = "throttle" if action == "throttle" else None
    # a temporary (4xx) spam block says "slower" (Yahoo's [TSS04], Orange's OFR004_105), as the
    # sender judges it (senders/node.py)
    outcome = signal_for(ev.category or "", action,
                          temporary=ev.code is not None and 400 <= ev.code < 500)
    # the time the provider answered (not when the event reached us) puts an outcome in the
    # decision period its message was sent in
    at = min(ev.timestamp, now) if ev.timestamp > 0 else now
    if warmup is not None:
        _count_warmup(row, ev, warmup, outcome, at, now)
    if outcome is not Signal.NEUTRAL:
        if rule.speed.per_ip and ev.source_ip:
            s = _ip_speed(row, rule, ev.source_ip, now)
            s = observe(s, outcome, rule.speed, rule.sending.tact, at, ev.source_ip, ev.node)
            row.ip_speed[ev.source_ip] = _pack(s)
        else:
            s = _speed(row, rule, now) or initial(rule.speed, now)
            s = observe(s, outcome, rule.speed, rule.sending.tact, at, ev.source_ip, ev.node)
            row.speed = _pack(s)
    row.updated_at = now
    return _changed(before, _states_for(row, rule, now, ips, pool))


_REPUTATION_KIND = {Status.DELIVERED: "delivered", Status.COMPLAINT: "complaint",
                    Status.UNSUBSCRIBE: "unsubscribe"}


def apply_reputation(row: Row, ev: DeliveryEvent, cfg: ReputationConfig,
                     now: float) -> list[tuple[str, str]]:
    """Count the event in the row's rolling rates; the holds it places (key, reason)."""
    kind = _REPUTATION_KIND.get(ev.status)
    if (ev.status is Status.BOUNCED and suppresses(ev.category or "")) or (
            ev.status is Status.ASYNC_BOUNCE and ev.feedback is not None and ev.feedback.hard):
        kind = "hard_bounce"
    keys = hold_keys(ev.campaign, ev.sender)
    if kind is None or not keys or not cfg.enabled:
        return []
    book = RateBook(row.rates)
    at = min(ev.timestamp, now) if ev.timestamp > 0 else now
    book.observe(keys, kind, at)
    book.prune(now)
    if kind != "complaint":
        return []
    held = new_holds(book, row.holds, row.released, row.isp, keys, now,
                     cfg.complaint_limits, cfg.min_delivered)
    for key, why in held:
        row.holds[key] = why
    return held


def apply_command(row: Row, cmd: ControlCommand, kb: KnowledgeBase, now: float) -> None:
    """Apply an operator command; raises ConfigError (nothing applied) for a bad rule edit."""
    scope = row.whole
    if cmd.source_ip:
        scope = row.ips.setdefault(cmd.source_ip, ScopeRow())
    elif cmd.pool:
        scope = row.pools.setdefault(cmd.pool, ScopeRow())
    if cmd.action is ControlAction.RESUME and cmd.hold:
        if cmd.hold not in row.holds:
            raise ConfigError(f"{row.isp}: no hold {cmd.hold!r} (holds: "
                              f"{', '.join(sorted(row.holds)) or 'none'})")
        del row.holds[cmd.hold]
        row.released[cmd.hold] = now
    elif cmd.action is ControlAction.PAUSE:
        scope.paused = True
    elif cmd.action is ControlAction.RESUME:
        scope.paused = False
    elif cmd.action is ControlAction.UNLOCK:
        scope.locked_until = None
        scope.lock_reason = None
        scope.lock_reply = None
        scope.hits = {}
        if not cmd.source_ip and not cmd.pool:
            row.throttle_until = None
            row.throttle_rate = None
            row.max_connections = None
    elif cmd.action is ControlAction.CLEAR:
        row.clear_before = now
    elif cmd.action is ControlAction.SET_RULES:
        merged = {**(row.rules or {}), **(cmd.rules or {})}
        kb.validate_live(row.isp, merged)
        row.rules = merged
        row.rules_version += 1
    elif cmd.action is ControlAction.RESET_RULES:
        row.rules = None
        row.rules_version += 1
    row.updated_at = now


def warmup_mark(cmd: ControlCommand, now: float) -> IspState:
    """The state record of a warm-up command (``kmta ip warmup start|stop IP``): a mark every
    worker and sender reads, key ``*|<ip>``; a start counts from today (UTC)."""
    since = utc_day(now) if cmd.action is ControlAction.WARMUP_START else None
    return IspState(isp=ALL_ISPS, source_ip=cmd.source_ip, warmup_since=since, updated_at=now)


def _bounded(speed: float, row: Row, rule: EffectiveRule, now: float) -> float:
    # a live edit narrows the bounds at once, not only at the next delivery event; a throttle
    # rule's rate caps every IP
    speed = max(speed, rule.speed.min)
    if rule.speed.max is not None:
        speed = min(speed, rule.speed.max)
    if row.throttle_until is not None and row.throttle_until > now and row.throttle_rate:
        speed = min(speed, row.throttle_rate)
    return round(speed, 3)


def _isp_fields(row: Row, rule: EffectiveRule, now: float) -> dict[str, Any]:
    """The whole ISP's record as ``IspState`` fields; its speed is the lowest IP level (per_ip),
    the speed of an IP without a level of its own."""
    raw = lowest(v["speed"] for v in row.ip_speed.values()) if rule.speed.per_ip else None
    if raw is None:
        raw = row.speed["speed"] if row.speed else (rule.speed.start or rule.speed.min)
    throttled = row.throttle_until is not None and row.throttle_until > now
    return dict(
        isp=row.isp, paused=row.whole.paused, locked_until=row.whole.locked_until,
        lock_reason=row.whole.lock_reason, lock_reply=row.whole.lock_reply,
        speed=_bounded(raw, row, rule, now), speed_min=rule.speed.min,
        speed_max=rule.speed.max,
        throttle_until=row.throttle_until if throttled else None,
        throttle_rate=row.throttle_rate if throttled else None,
        max_connections=row.max_connections if throttled else None,
        clear_before=row.clear_before, rules=row.rules, rules_version=row.rules_version,
        holds=dict(row.holds) or None, updated_at=0.0)


_NO_SCOPE = ScopeRow()  # read only: the fields of an IP without a scope of its own


def _ip_fields(row: Row, rule: EffectiveRule, now: float, ip: str) -> dict[str, Any] | None:
    """Source IP ``ip``'s record as fields (None: it has nothing of its own to publish); its
    warm-up snapshot as stored (``_record`` validates it)."""
    sc = row.ips.get(ip)
    warm = row.warm_pub.get(ip)
    level = row.ip_speed.get(ip) if rule.speed.per_ip else None
    if sc is None and warm is None and level is None:
        return None
    sc = sc or _NO_SCOPE
    return dict(isp=row.isp, source_ip=ip, paused=sc.paused,
                locked_until=sc.locked_until, lock_reason=sc.lock_reason,
                lock_reply=sc.lock_reply, updated_at=0.0,
                speed=None if level is None else _bounded(level["speed"], row, rule, now),
                warmup=warm or None)


def _pool_fields(row: Row, pool: str) -> dict[str, Any] | None:
    sc = row.pools.get(pool)
    if sc is None:
        return None
    return dict(isp=row.isp, pool=pool, paused=sc.paused, locked_until=sc.locked_until,
                lock_reason=sc.lock_reason, lock_reply=sc.lock_reply, updated_at=0.0)


def _record(fields: dict[str, Any] | None) -> IspState | None:
    if fields is None:
        return None
    warm = fields.get("warmup")
    if warm is not None:
        fields = {**fields, "warmup": WarmupStatus.model_validate(warm)}
    return IspState(**fields)


def _states_for(row: Row, rule: EffectiveRule, now: float, ips: list[str],
                pool: str | None) -> list[dict[str, Any] | None]:
    """The fields of the ISP's record, then those of ``ips`` and ``pool`` (None where there is
    none). Plain dicts: ``apply_event`` compares them before and after an event and validates
    an ``IspState`` only for what changed (most events change nothing)."""
    out: list[dict[str, Any] | None] = [_isp_fields(row, rule, now)]
    out += [_ip_fields(row, rule, now, ip) for ip in ips]
    if pool:
        out.append(_pool_fields(row, pool))
    return out


def _changed(before: list[dict[str, Any] | None],
             after: list[dict[str, Any] | None]) -> list[IspState]:
    """The records that changed, as ``IspState`` equality says (fields that differ as stored
    are validated, then compared as records); one with nothing left is published blank."""
    out = []
    for a, b in zip(after, before, strict=True):
        if a == b:
            continue
        st, old = _record(a), _record(b)
        if st == old:
            continue
        # a record with nothing left (an IP's warm-up ended) is published blank: the compacted
        # topic would else keep its last warm-up snapshot
        if st is None:
            assert old is not None
            st = IspState(isp=old.isp, source_ip=old.source_ip, pool=old.pool, updated_at=0.0)
        out.append(st)
    return out


def states_of(row: Row, rule: EffectiveRule, now: float) -> list[IspState]:
    """The IspState records to publish for this row: the whole ISP, then each source IP that
    has a level (speed.per_ip), a scope or a warm-up of its own, and each pool with a scope."""
    fields = [_isp_fields(row, rule, now)]
    fields += [_ip_fields(row, rule, now, ip)
               for ip in sorted(set(row.ips) | set(row.warm_pub) | set(row.ip_speed))]
    fields += [_pool_fields(row, pool) for pool in sorted(row.pools)]
    return [st for f in fields if (st := _record(f)) is not None]
