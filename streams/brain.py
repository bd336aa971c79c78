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
    speed: dict[str, Any] | None = None
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


def _speed(row: Row, rule: EffectiveRule, now: float) -> SpeedState:
    if row.speed is None:
        return initial(rule.speed, now)
    known = {k: v for k, v in row.speed.items() if k in _SPEED_FIELDS}
    if "mode" not in known:  # a row of the older controller: its speed is learned
        return initial(rule.speed, now, learned=float(known.get("speed", rule.speed.min)))
    known["sources"] = tuple(known.get("sources", ()))
    known["cut_ips"] = tuple(known.get("cut_ips", ()))
    known["recent"] = tuple(tuple(x) for x in known.get("recent", ()))
    return SpeedState(**known)  # observe() re-clamps into the rule's bounds


def _store_speed(row: Row, s: SpeedState) -> None:
    row.speed = dataclasses.asdict(s)


def _count_warmup(row: Row, ev: DeliveryEvent, plan: WarmPlan, outcome: Signal,
                  at: float, now: float) -> None:
    """Count an attempt of a new source IP in its warm-up; publish a snapshot when due."""
    for ip in [ip for ip in row.warm if ip not in plan.ips]:  # its warm-up was ended
        row.warm.pop(ip)
        row.warm_pub.pop(ip, None)
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
                warmup: WarmPlan | None = None) -> bool:
    """Update the row from one delivery event; True when the published state changed.
    ``warmup``: the new source IPs, whose attempts count in their warm-up."""
    if ev.status not in (Status.DELIVERED, Status.DEFERRED, Status.BOUNCED, Status.EXPIRED):
        return False
    if ev.code is None and not ev.internal:
        return False
    rule = kb.effective(row.isp, row.rules)
    before = states_of(row, rule, now)
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
    s = _speed(row, rule, now)
    # the time the provider answered (not when the event reached us) puts an outcome in the
    # decision period its message was sent in
    at = min(ev.timestamp, now) if ev.timestamp > 0 else now
    if warmup is not None:
        _count_warmup(row, ev, warmup, outcome, at, now)
    if outcome is not Signal.NEUTRAL:
        s = observe(s, outcome, rule.speed, rule.sending.tact, at, ev.source_ip, ev.node)
    _store_speed(row, s)
    row.updated_at = now
    return states_of(row, rule, now) != before


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


def states_of(row: Row, rule: EffectiveRule, now: float) -> list[IspState]:
    """The IspState records to publish for this row: the whole ISP, then each source IP and
    each pool that has a scope of its own."""
    speed = row.speed["speed"] if row.speed else (rule.speed.start or rule.speed.min)
    # a live edit narrows the bounds at once, not only at the next delivery event
    speed = max(speed, rule.speed.min)
    if rule.speed.max is not None:
        speed = min(speed, rule.speed.max)
    throttled = row.throttle_until is not None and row.throttle_until > now
    if throttled and row.throttle_rate is not None:
        speed = min(speed, row.throttle_rate)
    out = [IspState(
        isp=row.isp, paused=row.whole.paused, locked_until=row.whole.locked_until,
        lock_reason=row.whole.lock_reason, lock_reply=row.whole.lock_reply,
        speed=round(speed, 3), speed_min=rule.speed.min, speed_max=rule.speed.max,
        throttle_until=row.throttle_until if throttled else None,
        throttle_rate=row.throttle_rate if throttled else None,
        max_connections=row.max_connections if throttled else None,
        clear_before=row.clear_before, rules=row.rules, rules_version=row.rules_version,
        holds=dict(row.holds) or None, updated_at=0.0)]
    for ip in sorted(set(row.ips) | set(row.warm_pub)):
        sc = row.ips.get(ip) or ScopeRow()
        warm = row.warm_pub.get(ip)
        out.append(IspState(isp=row.isp, source_ip=ip, paused=sc.paused,
                            locked_until=sc.locked_until, lock_reason=sc.lock_reason,
                            lock_reply=sc.lock_reply, updated_at=0.0,
                            warmup=WarmupStatus.model_validate(warm) if warm else None))
    for pool, sc in sorted(row.pools.items()):
        out.append(IspState(isp=row.isp, pool=pool, paused=sc.paused,
                            locked_until=sc.locked_until, lock_reason=sc.lock_reason,
                            lock_reply=sc.lock_reply, updated_at=0.0))
    return out
