"""Rolling reputation rates: complaints, hard bounces and unsubscribes per delivered message,
over 24 hours and 7 days, per ISP, sending domain and campaign (and per ISP x domain, ISP x
campaign: Gmail's and Yahoo's 0.3 % complaint limit is per sender at that provider). Pure:
stdlib only; time is an argument.

Counts are kept in hourly buckets (at most 168 a key), so a window is a sum of buckets: exact
to the hour, bounded memory whatever the volume.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DAY",
    "DEFAULT_THRESHOLDS",
    "KINDS",
    "WEEK",
    "RateBook",
    "Rates",
    "held_by",
    "hold_keys",
    "keys_of",
    "new_holds",
    "over_threshold",
]

DAY = 24 * 3600.0
WEEK = 7 * DAY
KINDS = ("delivered", "hard_bounce", "complaint", "unsubscribe")
_HOUR = 3600
# complaint rate limits by ISP (Gmail and Yahoo sender guidelines, 2024: keep the spam rate
# reported in Postmaster Tools under 0.3 %); others take "default"
DEFAULT_THRESHOLDS = {"gmail": 0.003, "yahoo": 0.003, "default": 0.003}


@dataclass(frozen=True)
class Rates:
    delivered: int
    hard_bounce: int
    complaint: int
    unsubscribe: int

    def rate(self, kind: str) -> float | None:
        """``kind`` per delivered message; None before anything was delivered."""
        return getattr(self, kind) / self.delivered if self.delivered else None


@dataclass
class RateBook:
    """key -> hour -> counts (one per ``KINDS``)."""

    buckets: dict[str, dict[int, list[int]]] = field(default_factory=dict)

    def observe(self, keys: Iterable[str], kind: str, now: float, n: int = 1) -> None:
        i = KINDS.index(kind)
        hour = int(now // _HOUR)
        for k in keys:
            b = self.buckets.setdefault(k, {}).setdefault(hour, [0, 0, 0, 0])
            b[i] += n

    def rates(self, key: str, now: float, window: float) -> Rates:
        first = int((now - window) // _HOUR) + 1
        tot = [0, 0, 0, 0]
        for hour, c in self.buckets.get(key, {}).items():
            if hour >= first:
                for i in range(4):
                    tot[i] += c[i]
        return Rates(*tot)

    def prune(self, now: float, keep: float = WEEK) -> None:
        first = int((now - keep) // _HOUR) + 1
        for k in list(self.buckets):
            hours = self.buckets[k]
            for h in [h for h in hours if h < first]:
                del hours[h]
            if not hours:
                del self.buckets[k]


def keys_of(isp: str | None, domain: str | None, campaign: str | None) -> list[str]:
    """The keys an event counts under."""
    out = []
    if isp:
        out.append(f"isp:{isp}")
    if domain:
        out.append(f"domain:{domain}")
        if isp:
            out.append(f"isp:{isp}|domain:{domain}")
    if campaign:
        out.append(f"campaign:{campaign}")
        if isp:
            out.append(f"isp:{isp}|campaign:{campaign}")
    return out


def over_threshold(book: RateBook, key: str, now: float, isp: str | None,
                   thresholds: dict[str, float] | None = None, min_delivered: int = 1000,
                   window: float = DAY) -> str | None:
    """Why ``key`` should be paused (its complaint rate over the ISP's limit in the window,
    with at least ``min_delivered`` messages delivered: a handful of complaints on a tiny
    volume proves nothing), else None."""
    limits = thresholds or DEFAULT_THRESHOLDS
    limit = limits.get(isp or "", limits.get("default"))
    if limit is None:
        return None
    r = book.rates(key, now, window)
    rate = r.rate("complaint")
    if rate is None or r.delivered < min_delivered or rate <= limit:
        return None
    return (f"complaint rate {rate:.2%} over {limit:.2%} ({r.complaint} of {r.delivered} "
            f"delivered in {window / 3600:.0f} h)")


def hold_keys(campaign: str | None, sender: str | None) -> list[str]:
    """The keys (inside one ISP) a message can be held by: its campaign and the domain of its
    envelope sender (the return path with VERP)."""
    out = []
    if campaign:
        out.append(f"campaign:{campaign}")
    if sender and "@" in sender:
        out.append(f"domain:{sender.rpartition('@')[2].lower()}")
    return out


def held_by(holds: Mapping[str, str] | None, isp: str, campaign: str | None,
            sender: str | None) -> str | None:
    """Why a hold at ISP ``isp`` (``holds``: key -> reason, as the brain publishes them) stops
    a message of ``campaign`` from envelope sender ``sender``; None when none does."""
    if not holds:
        return None
    for key in hold_keys(campaign, sender):
        if key in holds:
            return f"{key} held at {isp}: {holds[key]}"
    return None


def new_holds(book: RateBook, holds: dict[str, str], released: dict[str, float], isp: str,
              keys: Iterable[str], now: float, thresholds: dict[str, float] | None = None,
              min_delivered: int = 1000, window: float = DAY) -> list[tuple[str, str]]:
    """The keys (of ``keys``, inside ISP ``isp``) to hold now, with the reason: over the
    complaint limit, not held already, and not released by an operator within ``window``
    (a release gives the rate that long to come down before the rule can hold again)."""
    out = []
    for key in keys:
        if key in holds or now - released.get(key, -window - 1) <= window:
            continue
        why = over_threshold(book, key, now, isp, thresholds, min_delivered, window)
        if why:
            out.append((key, why))
    return out
