"""The dashboard's data layer: a ``Board`` folds the public topics into tables and series.

Pure: no Kafka, no Dash, no clock. Records go in through ``apply_*``; every query takes ``now``
or ``since`` as an argument. Counts are exact: for every message id the Board keeps its last
status (packed with its ISP and campaign into one small int), so a message moves from one
column to the next instead of being counted twice; a repeated final event is ignored.

Definitions used by the tables and charts:

* ``queued``: accepted and not yet final, and not waiting for a retry (last status ``queued``).
* ``deferred_waiting``: ids whose last event is ``deferred`` (waiting for the next attempt).
* ``success_rate`` (row): delivered / (delivered + bounced + expired) of finished messages.
* ``success_series``: per bucket, delivered / delivery attempts, where an attempt is a
  delivered, bounced or deferred event with a reply from the provider (not ``internal``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from kmta.pipeline.suppressionstore import SuppressionStore
from kmta.policy.classify import suppresses
from kmta.policy.reputation import (
    DAY,
    DEFAULT_THRESHOLDS,
    KINDS,
    WEEK,
    RateBook,
    keys_of,
    over_threshold,
)
from schemas.control import ALL_ISPS, ControlRecord
from schemas.events import FEEDBACK_STATUSES, FINAL_STATUSES, DeliveryEvent, Status
from schemas.nodes import NodeStats
from schemas.state import IspState
from schemas.suppression import Suppression

__all__ = ["NO_ISP", "STATUS_CODES", "Board"]

NO_ISP = "(unrouted)"
# Status <-> small int; 0 means "never seen". Four bits are enough.
STATUS_CODES: dict[Status, int] = {s: i + 1 for i, s in enumerate(Status)}
_STATUS_BY_CODE = {v: k for k, v in STATUS_CODES.items()}
_FINAL_CODES = frozenset(STATUS_CODES[s] for s in FINAL_STATUSES)
_STATUS_BITS = 4
_ISP_BITS = 20
_ISP_MASK = (1 << _ISP_BITS) - 1
_COLUMNS = [s.value for s in Status]
_HOUR = 3600  # the rate book's bucket
_DELIVERED, _COMPLAINT = KINDS.index("delivered"), KINDS.index("complaint")
_REPLY_STATUSES = frozenset({Status.BOUNCED, Status.DEFERRED, Status.EXPIRED})
_RATE_KIND = {Status.ASYNC_BOUNCE: "hard_bounce", Status.COMPLAINT: "complaint",
              Status.UNSUBSCRIBE: "unsubscribe"}


def _rate_keys(ev: DeliveryEvent) -> list[str]:
    """The envelope sender's domain stands for the sending domain (the return path with VERP)."""
    domain = ev.sender.rpartition("@")[2].lower() if ev.sender and "@" in ev.sender else None
    return keys_of(ev.isp, domain, ev.campaign)


@dataclass
class _Bucket:
    delivered: int = 0
    bounced: int = 0
    deferred: int = 0
    attempts: int = 0
    expired: int = 0
    other: int = 0
    categories: dict[str, int] = field(default_factory=dict)


@dataclass
class _Reply:
    text: str
    timestamp: float
    internal: bool


@dataclass
class _NodeRate:
    timestamp: float
    delivered_total: int
    rate: float = 0.0


class Board:
    """Everything the dashboard shows, rebuilt from Kafka by replaying the topics from the start.

    ``lock`` is for the caller: a feed thread applies records under it while the web app reads
    under it. The Board itself never takes it.
    """

    def __init__(
        self,
        *,
        resolution: float = 10.0,
        retention: float = 26 * 3600.0,
        stale_after: float = 10.0,
        max_audit: int = 2000,
        max_speed_points: int = 20000,
        suppression_path: str | None = None,
    ) -> None:
        """``suppression_path``: the panel's suppression store, kept across restarts
        (``kmta/pipeline/suppressionstore.py``); None: a temporary one."""
        self.lock = threading.RLock()
        self.resolution = resolution
        self.retention = retention
        self.stale_after = stale_after
        self.skipped = 0  # undecodable records, counted by the feed
        self.events = 0
        self.duplicates = 0
        self.latest = 0.0  # newest event timestamp seen
        self._last: dict[str, int] = {}
        self._isps: list[str] = []
        self._isp_idx: dict[str, int] = {}
        self._campaigns: list[str | None] = [None]
        self._campaign_idx: dict[str | None, int] = {None: 0}
        self._counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self._campaign_counts: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self._bounce_cats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._deferrals: dict[str, int] = defaultdict(int)
        self._reply: dict[str, _Reply] = {}
        self._buckets: dict[str, dict[int, _Bucket]] = defaultdict(dict)
        self._states: dict[str, IspState] = {}
        self._warm_marks: dict[str, int | None] = {}  # source IP -> warm-up start day / None
        self._speed: dict[str, deque[tuple[float, float]]] = defaultdict(
            lambda: deque(maxlen=max_speed_points)
        )
        self._locks: dict[str, list[list[Any]]] = defaultdict(list)
        self._nodes: dict[str, NodeStats] = {}
        self._node_rate: dict[str, _NodeRate] = {}
        self._audit: deque[ControlRecord] = deque(maxlen=max_audit)
        # sending domain -> [signed, unsigned, {selector: count}] from the queued events
        self._signing: dict[str, list[Any]] = {}
        self._suppression_path = suppression_path
        self._suppressions: SuppressionStore | None = None  # on disk, bounded
        self._rates = RateBook()
        self._rates_pruned_hour = 0

    # ------------------------------------------------------------------ packing
    def _intern_isp(self, isp: str) -> int:
        idx = self._isp_idx.get(isp)
        if idx is None:
            idx = self._isp_idx[isp] = len(self._isps)
            self._isps.append(isp)
        return idx

    def _intern_campaign(self, campaign: str | None) -> int:
        idx = self._campaign_idx.get(campaign)
        if idx is None:
            idx = self._campaign_idx[campaign] = len(self._campaigns)
            self._campaigns.append(campaign)
        return idx

    @staticmethod
    def _pack(status: int, isp: int, campaign: int) -> int:
        return (((campaign << _ISP_BITS) | isp) << _STATUS_BITS) | status

    @staticmethod
    def _unpack(v: int) -> tuple[int, int, int]:
        status = v & ((1 << _STATUS_BITS) - 1)
        rest = v >> _STATUS_BITS
        return status, rest & _ISP_MASK, rest >> _ISP_BITS

    # ------------------------------------------------------------------ apply
    def apply_event(self, ev: DeliveryEvent) -> None:
        """Fold one delivery event (results topic) into counts, replies and time buckets."""
        self.events += 1
        isp = ev.isp or NO_ISP
        code = STATUS_CODES[ev.status]
        if ev.status in FEEDBACK_STATUSES:
            # after the final event and not changing it: counted in a column of its own,
            # the message keeps its outcome
            kind = _RATE_KIND.get(ev.status)
            if ev.status is Status.ASYNC_BOUNCE and not (ev.feedback and ev.feedback.hard):
                kind = None  # a soft late bounce (mailbox full) is no reputation signal
            if kind:
                self._rates.observe(_rate_keys(ev), kind, ev.timestamp)
            self._counts[isp][code] += 1
            self._campaign_counts[self._intern_campaign(ev.campaign)][code] += 1
            self._intern_isp(isp)
            return
        prev = self._last.get(ev.id)
        if prev is not None:
            pstatus, pisp, pcamp = self._unpack(prev)
            if pstatus in _FINAL_CODES:
                # at-least-once delivery: a message has exactly one final; later ones are echoes
                self.duplicates += 1
                return
            self._counts[self._isps[pisp]][pstatus] -= 1
            self._campaign_counts[pcamp][pstatus] -= 1
            camp_idx = pcamp if ev.campaign is None else self._intern_campaign(ev.campaign)
        else:
            camp_idx = self._intern_campaign(ev.campaign)
            if ev.status is Status.QUEUED:
                self._count_signing(ev)
        isp_idx = self._intern_isp(isp)
        self._last[ev.id] = self._pack(code, isp_idx, camp_idx)
        if ev.status is Status.DELIVERED or (ev.status is Status.BOUNCED
                                             and suppresses(ev.category or "")):
            kind = "delivered" if ev.status is Status.DELIVERED else "hard_bounce"
            self._rates.observe(_rate_keys(ev), kind, ev.timestamp)
        self._counts[isp][code] += 1
        self._campaign_counts[camp_idx][code] += 1

        if ev.status is Status.BOUNCED:
            self._bounce_cats[isp][ev.category or "other"] += 1
        if ev.status is Status.DEFERRED:
            self._deferrals[isp] += 1
        if ev.response or ev.code:
            text = " ".join(str(x) for x in (ev.code, ev.enhanced_code, ev.response) if x)
            old = self._reply.get(isp)
            if old is None or ev.timestamp >= old.timestamp:
                self._reply[isp] = _Reply(text, ev.timestamp, ev.internal)
        self._bucket_event(isp, ev)
        if ev.timestamp > self.latest:
            self.latest = ev.timestamp
            self._prune()

    def _count_signing(self, ev: DeliveryEvent) -> None:
        """Signed or not, per sending domain: the first signature's d= (the From domain's or
        the platform's), else the envelope sender's domain (the From address when unsigned)."""
        if ev.dkim:
            domain = ev.dkim[0].partition("._domainkey.")[2]
        else:
            domain = (ev.sender or "").rpartition("@")[2].lower()
            if not domain:
                return
        row = self._signing.get(domain)
        if row is None:
            row = self._signing[domain] = [0, 0, {}]
        row[0 if ev.dkim else 1] += 1
        for sel in ev.dkim or ():
            row[2][sel] = row[2].get(sel, 0) + 1

    def signing_rows(self, configured: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per sending domain: configured selectors (``configured``: per domain ``domain``,
        ``selectors`` [{selector, algorithm, active}]) and what the queued events say."""
        rows: dict[str, dict[str, Any]] = {}
        for c in configured:
            act = [s["selector"] for s in c["selectors"] if s["active"]]
            rows[c["domain"]] = {
                "domain": c["domain"], "signing_now": "yes" if act else "NO",
                "selectors": ", ".join(
                    f"{s['selector']} ({s['algorithm'].split('-')[0]}"
                    f"{'' if s['active'] else ', inactive'})" for s in c["selectors"]),
                "signed": 0, "unsigned": 0, "seen": ""}
        for domain, (signed, unsigned, sels) in self._signing.items():
            r = rows.setdefault(domain, {"domain": domain, "signing_now": "not configured",
                                         "selectors": "", "signed": 0, "unsigned": 0,
                                         "seen": ""})
            r["signed"], r["unsigned"] = signed, unsigned
            r["seen"] = ", ".join(f"{s.partition('._domainkey.')[0]}@"
                                  f"{s.partition('._domainkey.')[2]}: {n}"
                                  for s, n in sorted(sels.items()))
        return sorted(rows.values(), key=lambda r: r["domain"])

    def _bucket_event(self, isp: str, ev: DeliveryEvent) -> None:
        key = int(ev.timestamp // self.resolution)
        b = self._buckets[isp].get(key)
        if b is None:
            b = self._buckets[isp][key] = _Bucket()
        st = ev.status
        if st is Status.DELIVERED:
            b.delivered += 1
        elif st is Status.BOUNCED:
            b.bounced += 1
        elif st is Status.DEFERRED:
            b.deferred += 1
        elif st is Status.EXPIRED:
            b.expired += 1
        elif st is not Status.QUEUED:
            b.other += 1
        if st in (Status.DELIVERED, Status.BOUNCED, Status.DEFERRED) and not ev.internal:
            b.attempts += 1
        if ev.category and st in _REPLY_STATUSES:
            # replies only: cancelled, suppressed, rejected are kmta's own decisions
            b.categories[ev.category] = b.categories.get(ev.category, 0) + 1

    def _prune(self) -> None:
        hour = int(self.latest // _HOUR)
        if hour != self._rates_pruned_hour:  # hourly counts past the week go (once an hour)
            self._rates_pruned_hour = hour
            self._rates.prune(self.latest)
        floor = int((self.latest - self.retention) // self.resolution)
        for buckets in self._buckets.values():
            if buckets and min(buckets) < floor:
                for k in [k for k in buckets if k < floor]:
                    del buckets[k]

    def apply_state(self, st: IspState) -> None:
        """Fold one brain decision (state topic): lock, pause, speed, live rules."""
        if st.isp == ALL_ISPS:  # an operator's warm-up mark of a source IP, not an ISP
            self._warm_marks[st.source_ip or ""] = st.warmup_since
            return
        prev = self._states.get(st.key)
        self._states[st.key] = st
        self._intern_isp(st.isp)
        t = st.updated_at or self.latest
        if st.source_ip is None and st.speed is not None:
            pts = self._speed[st.isp]
            if not pts or pts[-1][1] != st.speed:  # a step chart needs only the changes
                pts.append((t, st.speed))
        self._track_lock(st, prev, t)

    def _track_lock(self, st: IspState, prev: IspState | None, t: float) -> None:
        locks = self._locks[st.isp]
        label = st.lock_reason or "locked"
        scope = _scope(st)
        if scope:
            label = f"{scope}: {label}"
        open_ = next((lk for lk in reversed(locks) if lk[3] == scope and lk[1] > t), None)
        if st.locked_until is not None and st.locked_until > t:
            if open_ is not None:
                open_[1] = st.locked_until  # extended or shortened
                open_[2] = label
            else:
                locks.append([t, st.locked_until, label, scope])
        elif open_ is not None and prev is not None and prev.locked_until:
            open_[1] = t  # unlocked early

    def apply_audit(self, rec: ControlRecord) -> None:
        self._audit.append(rec)

    @property
    def suppression_store(self) -> SuppressionStore:
        # made on first use: most boards (kmta status, tests) never see a suppression record
        if self._suppressions is None:
            self._suppressions = SuppressionStore(self._suppression_path)
        return self._suppressions

    _supp = suppression_store

    def close(self) -> None:
        """Commit and close the suppression store (the panel at exit)."""
        with self.lock:
            if self._suppressions is not None:
                self._suppressions.close()
                self._suppressions = None

    def apply_suppression(self, key: str, rec: Suppression | None) -> None:
        """A suppression record (None: removed by a tombstone)."""
        self._supp.apply(key, rec)

    def suppression_counts(self) -> dict[str, int]:
        """Records per reason (every reason, zeros included) and the total."""
        return self._supp.counts()

    def suppression_rows(self, query: str | None, limit: int = 200,
                         offset: int = 0) -> list[dict[str, Any]]:
        """A page of the records a search finds (``kmta/pipeline/suppressionstore.py``: a domain's
        or all newest first, else addresses starting with ``query``)."""
        return self._supp.rows(query, limit, offset)

    def suppression_matches(self, query: str | None) -> int:
        """How many records the search finds (at most ``suppressionstore.COUNT_CAP``)."""
        return self._supp.matches(query)

    def reputation_rows(self, now: float, thresholds: dict[str, float] | None = None,
                        min_delivered: int = 1000) -> list[dict[str, Any]]:
        """Per ISP, sending domain, campaign and ISP x domain / campaign: complaint, hard
        bounce and unsubscribe rates over 24 h and 7 d; ``over`` names a complaint rate past
        the ISP's limit (for ISP-scoped keys). What the Reputation table and its charts show.

        Each row also has ``scope`` (``isp``, ``domain``, ``campaign``, ``isp_domain``,
        ``isp_campaign``), ``isp`` and ``name`` (the domain or campaign; the ISP for ``isp``),
        ``limit`` (the ISP's complaint limit; None outside an ISP) and ``held``: the brain's
        reason for holding that scope (state topic, ``IspState.holds``), or for the rows that
        contain a held scope, which one (``at gmail: ...``, ``campaign:c1: ...``); else None.
        A held scope is listed even when no rate is counted for it."""
        limits = thresholds or DEFAULT_THRESHOLDS
        holds = self._holds()
        rows = []
        for key in sorted(set(self._rates.buckets) | {f"isp:{i}|{k}" for i, k in holds}):
            d = self._rates.rates(key, now, DAY)
            w = self._rates.rates(key, now, WEEK)
            scope, isp, name = _rate_scope(key)
            held = _held(scope, isp, name, holds)
            if not (d.delivered or w.delivered or w.complaint or w.unsubscribe or held):
                continue
            row: dict[str, Any] = {"key": key, "scope": scope, "isp": isp, "name": name,
                                   "delivered_24h": d.delivered, "delivered_7d": w.delivered}
            for kind in ("complaint", "hard_bounce", "unsubscribe"):
                for label, r in (("24h", d), ("7d", w)):
                    rate = r.rate(kind)
                    row[f"{kind}_{label}"] = round(rate, 5) if rate is not None else None
            row["over"] = over_threshold(self._rates, key, now, isp, thresholds,
                                         min_delivered) if isp else None
            row["limit"] = limits.get(isp, limits.get("default")) if isp else None
            row["held"] = held
            rows.append(row)
        return rows

    def reputation_history(self, keys: list[str], now: float, span: float = WEEK,
                           window: float = DAY) -> dict[str, list[dict[str, Any]]]:
        """Hour by hour over the last ``span``, each key's complaint rate over the ``window``
        (24 h: the rule's) ending at that hour: ``t`` (the hour's end, at most ``now``),
        ``delivered``, ``complaints`` and ``complaint`` (None with nothing delivered). From the
        same hourly counts as ``reputation_rows``; a key starts at its first counted hour."""
        last = int(now // _HOUR)
        first = int((now - span) // _HOUR) + 1
        width = int(window // _HOUR)
        out: dict[str, list[dict[str, Any]]] = {}
        for key in keys:
            hours = self._rates.buckets.get(key, {})
            seen = [h for h in hours if h <= last]
            if not seen:
                continue
            start = max(first, min(seen))
            pts = []
            for h in range(start, last + 1):
                delivered = complaints = 0
                for k in range(h - width + 1, h + 1):
                    c = hours.get(k)
                    if c is not None:
                        delivered += c[_DELIVERED]
                        complaints += c[_COMPLAINT]
                pts.append({"t": min(float((h + 1) * _HOUR), now), "delivered": delivered,
                            "complaints": complaints,
                            "complaint": round(complaints / delivered, 5) if delivered else None})
            out[key] = pts
        return out

    def _holds(self) -> dict[tuple[str, str], str]:
        """(ISP, ``campaign:<c>`` / ``domain:<d>``) -> why, as the brain last published."""
        return {(st.isp, k): why for st in self._states.values()
                if not st.source_ip and not st.pool for k, why in (st.holds or {}).items()}

    def warmup_rows(self, now: float) -> list[dict[str, Any]]:
        """Each new source IP at each ISP: its warm-up day and today's (and this hour's) use
        against the caps, as the brain last published them (kmta/policy/warmup.py)."""
        rows = []
        for st in sorted(self._states.values(), key=lambda s: (s.source_ip or "", s.isp)):
            w = st.warmup
            if w is None or not st.source_ip:
                continue
            day_sent = w.sent_today if int(now // 86400) <= w.today else 0
            hour_sent = w.sent_hour if int(now // 3600) <= w.hour else 0
            warm = w.daily_cap is None
            rows.append({
                "source_ip": st.source_ip, "isp": st.isp,
                "day": "warm" if warm else f"{w.day} of {w.days}",
                "today": f"{day_sent:,}" if warm else f"{day_sent:,} / {w.daily_cap:,}",
                "hour": "" if warm else f"{hour_sent:,} / {w.hourly_cap or 0:,}",
                "used_pct": None if warm else round(100 * day_sent / max(1, w.daily_cap or 1), 1),
                "throttles_today": w.throttles_today if day_sent else 0,
                "clean_days": w.clean_days, "step_backs": w.step_backs})
        shown = {r["source_ip"] for r in rows}
        for ip, since in sorted(self._warm_marks.items()):
            if since is not None and ip not in shown:  # marked new, nothing sent over it yet
                started = time.strftime("%Y-%m-%d", time.gmtime(since * 86400))
                rows.append({"source_ip": ip, "isp": "(every ISP)",
                             "day": f"from {started}", "today": "0", "hour": "",
                             "used_pct": None, "throttles_today": 0, "clean_days": 0,
                             "step_backs": 0})
        return rows

    def suppression(self, key: str) -> Suppression | None:
        return self._supp.get(key)

    def apply_node(self, ns: NodeStats) -> None:
        prev = self._node_rate.get(ns.node)
        rate = 0.0
        if prev is not None:
            dt = ns.timestamp - prev.timestamp
            if dt > 0:
                rate = max(0, ns.delivered_total - prev.delivered_total) / dt
            elif dt == 0:
                rate = prev.rate
        self._node_rate[ns.node] = _NodeRate(ns.timestamp, ns.delivered_total, rate)
        self._nodes[ns.node] = ns
        for isp in ns.isps:
            self._intern_isp(isp)

    # ------------------------------------------------------------------ tables
    def _fresh_nodes(self, now: float) -> list[NodeStats]:
        return [
            n
            for n in self._nodes.values()
            if now - n.timestamp <= self.stale_after and not n.stopping
        ]

    def isps(self) -> list[str]:
        return sorted(self._isps)

    def last_reply(self, isp: str) -> tuple[str, bool] | None:
        """The ISP's latest reply as ``("<code> <enhanced> <text>", internal)``, if any."""
        reply = self._reply.get(isp)
        return (reply.text, reply.internal) if reply else None

    def state(self, isp: str, source_ip: str | None = None) -> IspState | None:
        return self._states.get(isp if not source_ip else f"{isp}|{source_ip}")

    def isp_rows(self, now: float) -> list[dict[str, Any]]:
        """One row per ISP seen in any topic, sorted by name."""
        fresh = self._fresh_nodes(now)
        ip_states: dict[str, list[IspState]] = defaultdict(list)  # source IPs and pools
        for st in self._states.values():
            if st.source_ip or st.pool:
                ip_states[st.isp].append(st)
        rows = []
        for isp in sorted(self._isps):
            c = self._counts.get(isp, {})
            n = {s.value: c.get(STATUS_CODES[s], 0) for s in Status}
            st = self._states.get(isp)
            locked = bool(st and st.locked(now))
            in_flight = sum(n_.isps[isp].in_flight for n_ in fresh if isp in n_.isps)
            conns = sum(n_.isps[isp].connections for n_ in fresh if isp in n_.isps)
            node_backlog = sum(n_.isps[isp].backlog for n_ in fresh if isp in n_.isps)
            finished = n["delivered"] + n["bounced"] + n["expired"]
            reply = self._reply.get(isp)
            locked_ips = sorted(_scope(s) for s in ip_states[isp] if s.locked(now))
            paused_ips = sorted(_scope(s) for s in ip_states[isp] if s.paused)
            # each source IP's own level (speed.per_ip; the ISP's speed is the lowest)
            ip_speeds = sorted((s.source_ip, s.speed) for s in ip_states[isp]
                               if s.source_ip and s.speed is not None)
            cats = dict(sorted(self._bounce_cats.get(isp, {}).items()))
            rows.append(
                {
                    "isp": isp,
                    "queued": n["queued"],
                    "in_flight": in_flight,
                    "node_backlog": node_backlog,
                    "deferred_waiting": n["deferred"],
                    "delivered": n["delivered"],
                    "bounced": n["bounced"],
                    "async_bounce": n["async_bounce"],
                    "complaint": n["complaint"],
                    "unsubscribe": n["unsubscribe"],
                    "bounced_by_category": cats,
                    "bounce_categories": ", ".join(f"{k}: {v}" for k, v in cats.items()),
                    "suppressed": n["suppressed"],
                    "expired": n["expired"],
                    "cancelled": n["cancelled"],
                    "rejected": n["rejected"],
                    "deferrals": self._deferrals.get(isp, 0),
                    "locked": locked,
                    "lock_reason": (st.lock_reason if locked and st else None),
                    "lock_reply": (st.lock_reply if locked and st else None),
                    "lock_seconds_left": (
                        round(st.locked_until - now, 1)
                        if locked and st and st.locked_until
                        else None
                    ),
                    "locked_ips": ", ".join(locked_ips),
                    "paused": bool(st and st.paused),
                    "holds": "; ".join(f"{k}: {v}" for k, v in sorted(
                        (st.holds or {}).items())) if st else "",
                    "paused_ips": ", ".join(paused_ips),
                    "speed": st.speed if st else None,
                    "speed_min": st.speed_min if st else None,
                    "speed_max": st.speed_max if st else None,
                    "ip_speeds": ", ".join(f"{ip} {sp:g}" for ip, sp in ip_speeds),
                    "ip_speed_levels": dict(ip_speeds),
                    "throttled": bool(st and st.throttle_until and st.throttle_until > now),
                    "live_rules": bool(st and st.rules),
                    "connections": conns,
                    "last_reply": reply.text if reply else None,
                    "last_reply_at": reply.timestamp if reply else None,
                    "success_rate": round(n["delivered"] / finished, 4) if finished else None,
                }
            )
        return rows

    def totals(self) -> dict[str, Any]:
        out = {s.value: 0 for s in Status}
        for c in self._counts.values():
            for code, v in c.items():
                out[_STATUS_BY_CODE[code].value] += v
        out["accepted"] = len(self._last)
        out["final"] = sum(out[s.value] for s in FINAL_STATUSES)
        out["isps"] = len(self._isps)
        out["nodes"] = len(self._nodes)
        out["events"] = self.events
        out["duplicates"] = self.duplicates
        out["skipped"] = self.skipped
        return out

    def snapshot(self, now: float) -> dict[str, Any]:
        """Totals, ISP rows and node rows: what ``kmta status --json`` prints and the
        dashboard serves at ``/api/status``."""
        return {"totals": self.totals(), "isps": self.isp_rows(now), "nodes": self.node_rows(now)}

    def node_rows(self, now: float) -> list[dict[str, Any]]:
        rows = []
        for name in sorted(self._nodes):
            n = self._nodes[name]
            age = now - n.timestamp
            stale = age > self.stale_after
            rows.append(
                {
                    "node": name,
                    "partitions": ", ".join(str(p) for p in sorted(n.partitions)),
                    "partition_count": len(n.partitions),
                    "isps": ", ".join(sorted(n.isps)),
                    "in_flight": sum(x.in_flight for x in n.isps.values()),
                    "connections": sum(x.connections for x in n.isps.values()),
                    "delivered_total": n.delivered_total,
                    "throughput": round(self._node_rate[name].rate, 2),
                    "heartbeat_age": round(age, 1),
                    "stale": stale,
                    "status": "stopping" if n.stopping else ("stale" if stale else "ok"),
                }
            )
        return rows

    def campaign_rows(self) -> list[dict[str, Any]]:
        rows = []
        for idx, counts in self._campaign_counts.items():
            name = self._campaigns[idx]
            row: dict[str, Any] = {"campaign": name if name is not None else "(none)"}
            for s in Status:
                row[s.value] = counts.get(STATUS_CODES[s], 0)
            row["total"] = sum(row[s.value] for s in Status if s not in FEEDBACK_STATUSES)
            if row["total"]:
                rows.append(row)
        return sorted(rows, key=lambda r: r["campaign"])

    def audit_rows(self) -> list[dict[str, Any]]:
        """Newest first."""
        rows = []
        for rec in reversed(self._audit):
            cmd = rec.command
            if rec.suppression is not None:
                ch = rec.suppression
                rows.append({"time": rec.timestamp, "actor": ch.actor,
                             "action": f"suppression {ch.op}", "isp": None, "source_ip": None,
                             "reason": ch.reason, "rules": ch.key, "applied": rec.applied,
                             "error": rec.error, "id": None, "worker": rec.worker})
                continue
            rows.append(
                {
                    "time": rec.timestamp,
                    "actor": cmd.actor if cmd else None,
                    "action": cmd.action.value if cmd else None,
                    "isp": cmd.isp if cmd else None,
                    "source_ip": cmd.source_ip if cmd else None,
                    "reason": cmd.reason if cmd else None,
                    "rules": json.dumps(cmd.rules, sort_keys=True) if cmd and cmd.rules else None,
                    "applied": rec.applied,
                    "error": rec.error,
                    "id": cmd.id if cmd else None,
                    "worker": rec.worker,
                }
            )
        return rows

    # ------------------------------------------------------------------ series
    def _merged(self, isp: str | None, since: float, bucket: float) -> dict[float, _Bucket]:
        bucket = max(bucket, self.resolution)
        first = int(since // self.resolution)
        sources = [self._buckets[isp]] if isp is not None else list(self._buckets.values())
        out: dict[float, _Bucket] = {}
        for buckets in sources:
            for k, b in buckets.items():
                if k < first:
                    continue
                t = (k * self.resolution) // bucket * bucket
                m = out.get(t)
                if m is None:
                    m = out[t] = _Bucket()
                m.delivered += b.delivered
                m.bounced += b.bounced
                m.deferred += b.deferred
                m.attempts += b.attempts
                m.expired += b.expired
                m.other += b.other
                for c, v in b.categories.items():
                    m.categories[c] = m.categories.get(c, 0) + v
        return dict(sorted(out.items()))

    def success_series(
        self, isp: str | None, since: float, bucket: float = 60.0
    ) -> list[dict[str, Any]]:
        """Per bucket start ``t``: attempts, delivered and ``rate`` (None without attempts)."""
        if isp is not None and isp not in self._buckets:
            return []
        return [
            {
                "t": t,
                "attempts": b.attempts,
                "delivered": b.delivered,
                "rate": round(b.delivered / b.attempts, 4) if b.attempts else None,
            }
            for t, b in self._merged(isp, since, bucket).items()
        ]

    def throughput_series(self, since: float, bucket: float = 60.0) -> list[dict[str, Any]]:
        """Per bucket start ``t``: counts by outcome and ``per_s`` (delivered per second)."""
        return [
            {
                "t": t,
                "delivered": b.delivered,
                "bounced": b.bounced,
                "deferred": b.deferred,
                "expired": b.expired,
                "per_s": round(b.delivered / max(bucket, self.resolution), 3),
            }
            for t, b in self._merged(None, since, bucket).items()
        ]

    def category_counts(self, since: float) -> dict[str, int]:
        """Reply categories of non-delivered events (bounces, deferrals...) since ``since``."""
        out: dict[str, int] = defaultdict(int)
        for b in self._merged(None, since, self.resolution).values():
            for c, v in b.categories.items():
                out[c] += v
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def speed_series(self, isp: str, since: float) -> dict[str, list[Any]]:
        """``points``: (t, speed) from ISP-level state updates, with the last value before
        ``since`` carried in; ``locks``: (start, end, label) intervals overlapping ``since``."""
        pts = list(self._speed.get(isp, ()))
        before = [p for p in pts if p[0] < since]
        after = [p for p in pts if p[0] >= since]
        points = ([(since, before[-1][1])] if before else []) + after
        locks = [(s, e, label) for s, e, label, _ip in self._locks.get(isp, []) if e >= since]
        return {"points": points, "locks": locks}

    def status_of(self, msg_id: str) -> Status | None:
        v = self._last.get(msg_id)
        return _STATUS_BY_CODE[self._unpack(v)[0]] if v is not None else None


def _rate_scope(key: str) -> tuple[str, str | None, str]:
    """A rate key's (scope, ISP, name): ``isp:gmail|campaign:c1`` -> (isp_campaign, gmail, c1)."""
    isp = None
    if key.startswith("isp:"):
        isp, _, key = key[4:].partition("|")
        if not key:
            return "isp", isp, isp
    kind, _, name = key.partition(":")
    return (f"isp_{kind}" if isp else kind), isp, name


def _held(scope: str, isp: str | None, name: str,
          holds: dict[tuple[str, str], str]) -> str | None:
    """The brain's hold on this scope (its reason), or the holds this scope contains."""
    if scope == "isp":
        found = [f"{k}: {why}" for (i, k), why in sorted(holds.items()) if i == isp]
    elif scope.startswith("isp_"):
        why = holds.get((isp or "", f"{scope[4:]}:{name}"))
        found = [why] if why else []
    else:
        found = [f"at {i}: {why}" for (i, k), why in sorted(holds.items())
                 if k == f"{scope}:{name}"]
    return "; ".join(found) or None


def _scope(st: IspState) -> str:
    """How a narrowed state is shown: its source IP, ``pool <name>``, or "" (the whole ISP)."""
    if st.source_ip:
        return st.source_ip
    return f"pool {st.pool}" if st.pool else ""
