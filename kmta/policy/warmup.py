"""IP warm-up: a new source IP sends each provider at most a daily (and hourly) volume that
grows day by day, while its replies stay clean.

Pure functions over a frozen ``WarmState`` (one per provider and source IP), time as an
argument. Days and hours are UTC windows (``epoch // 86400``, ``epoch // 3600``). The brain
folds every attempt of a new IP into its state (``observe``) and publishes a snapshot
(``WarmupStatus``); a sender asks ``remaining`` on that snapshot, counting what it sent since.

A finished day is judged when the first event of a later day arrives (``roll``):

* clean (throttles at most ``CLEAN_MAX`` of its attempts) and busy (at least ``BUSY`` of its
  cap sent): the next schedule day; clean but not busy: the same day again (a trickle proves
  nothing about a higher volume, as for the speed controller); throttled (more than
  ``CLEAN_MAX``): one day back;
* within a day, ``STEP_MIN`` throttles that are more than ``STEP_RATE`` of its attempts step
  back one day at once (once a day): the cap of the day before applies from now.

Days without sending are not judged (nothing was learned). Past the schedule's last day the IP
is warm: ``caps`` is None and nothing limits it.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

from kmta.policy.kb import RulesError
from kmta.policy.speed import Signal
from schemas.state import WarmupStatus

__all__ = [
    "BUSY",
    "CLEAN_MAX",
    "DAY",
    "HOUR",
    "SHIPPED_SCHEDULES",
    "STEP_MIN",
    "STEP_RATE",
    "Pending",
    "Schedule",
    "Schedules",
    "WarmPlan",
    "WarmState",
    "begin",
    "caps",
    "free_at",
    "load_schedules",
    "new_ips",
    "observe",
    "pending",
    "publish_due",
    "remaining",
    "roll",
    "status",
    "utc_day",
]

DAY = 86400.0
HOUR = 3600.0
# A day advances when at most this share of its attempts was throttled (estimate: the deferral
# budget issue 9 sets for the speed controller; the controller's own probes cost ~1 %).
CLEAN_MAX = 0.02
# ... and when at least this share of its daily cap was sent (estimate).
BUSY = 0.5
# Throttles within a day that step it back at once (estimates: a provider pushing back on a
# new IP throttles much of what it gets; a few probe throttles must not count).
STEP_MIN = 5
STEP_RATE = 0.05
# The brain publishes a new snapshot at least every this share of the hourly cap (and when a
# cap is reached, a window turns, or the day changes): senders add what they sent since.
PUBLISH_STEP = 0.05

SHIPPED_SCHEDULES = Path(__file__).resolve().parent.parent / "data" / "warmup.toml"


@dataclass(frozen=True)
class Schedule:
    """Daily caps for warm-up days 1..n, and the hourly cap as a share of the day's."""

    daily: tuple[int, ...]
    hourly: float

    def caps_for(self, day: int) -> tuple[int, int] | None:
        """(daily, hourly) caps of warm-up ``day`` (1-based); None past the last day."""
        if day > len(self.daily):
            return None
        cap = self.daily[max(day, 1) - 1]
        return cap, max(1, math.ceil(cap * self.hourly))


@dataclass(frozen=True)
class Schedules:
    """The schedule of each provider (``default`` for the others)."""

    by_isp: Mapping[str, Schedule]

    def for_isp(self, isp: str) -> Schedule:
        return self.by_isp.get(isp) or self.by_isp["default"]


def _schedule(name: str, table: Any) -> Schedule:
    if not isinstance(table, Mapping):
        raise RulesError([f"warmup.{name}: must be a table"])
    unknown = set(table) - {"daily", "hourly"}
    if unknown:
        raise RulesError([f"warmup.{name}: unknown keys {sorted(unknown)}"])
    daily = table.get("daily")
    hourly = table.get("hourly", 0.25)
    if (not isinstance(daily, list) or not daily
            or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in daily)):
        raise RulesError([f"warmup.{name}.daily: a list of positive integers"])
    if any(b < a for a, b in pairwise(daily)):
        raise RulesError([f"warmup.{name}.daily: caps may not shrink from one day to the next"])
    if isinstance(hourly, bool) or not isinstance(hourly, int | float) or not 0 < hourly <= 1:
        raise RulesError([f"warmup.{name}.hourly: a share of the daily cap in (0, 1]"])
    return Schedule(tuple(daily), float(hourly))


def load_schedules(override: Mapping[str, Any] | None = None,
                   shipped: Path | None = None) -> Schedules:
    """The shipped schedules, each table of ``override`` replacing the shipped one."""
    path = shipped or SHIPPED_SCHEDULES
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RulesError([f"{path}: {e}"]) from None
    data.update(override or {})
    if "default" not in data:
        raise RulesError(["warmup: a [default] schedule is required"])
    return Schedules({name: _schedule(name, t) for name, t in data.items()})


@dataclass(frozen=True)
class WarmPlan:
    """Which source IPs are new (-> the UTC day their warm-up started) and the schedules."""

    ips: Mapping[str, int]
    schedules: Schedules


@dataclass(frozen=True)
class WarmState:
    """One new source IP at one provider: its warm-up day and the current windows' counts."""

    day: int = 1  # schedule day, 1-based
    today: int = 0  # the UTC day counted (epoch // 86400)
    sent: int = 0  # attempts today
    throttles: int = 0  # throttled attempts today
    hour: int = 0  # the UTC hour counted (epoch // 3600)
    sent_hour: int = 0
    stepped: bool = False  # stepped back within today already
    clean_days: int = 0
    step_backs: int = 0
    counted_at: float = 0.0  # the latest attempt counted (its result's time)
    started: int = 0  # the UTC day the warm-up started (a new start begins again)


def new_ips(configured: Mapping[str, int], marks: Mapping[str, int | None]) -> dict[str, int]:
    """The source IPs in warm-up: the config's, with the operator's marks over them (a mark
    of None ends an IP's warm-up, also one the config lists)."""
    out = dict(configured)
    for ip, since in marks.items():
        if since is None:
            out.pop(ip, None)
        else:
            out[ip] = since
    return out


def utc_day(epoch: float) -> int:
    return int(epoch // DAY)


def begin(started_day: int, now: float, schedule: Schedule) -> WarmState:
    """The state of an IP whose warm-up started on UTC day ``started_day`` with nothing
    recorded since: its day is the days elapsed (an operator's start date is trusted)."""
    today = utc_day(now)
    day = min(1 + max(0, today - started_day), len(schedule.daily) + 1)
    return WarmState(day=day, today=today, hour=int(now // HOUR), started=started_day)


def caps(state: WarmState, schedule: Schedule) -> tuple[int, int] | None:
    """(daily, hourly) caps now; None: the IP is warm."""
    return schedule.caps_for(state.day)


def roll(state: WarmState, schedule: Schedule, now: float, judge: bool = True) -> WarmState:
    """Move the state's windows to ``now``; a finished day that sent anything is judged (not
    when ``judge`` is False: a sender only clears the counts and keeps the day's cap)."""
    today, hour = utc_day(now), int(now // HOUR)
    s = state
    if today > s.today:
        day, clean_days, step_backs = s.day, s.clean_days, s.step_backs
        cap = schedule.caps_for(s.day)
        if judge and cap is not None and s.sent > 0:
            if s.throttles > CLEAN_MAX * s.sent:
                day, step_backs = max(1, day - 1), step_backs + 1
            elif s.sent >= BUSY * cap[0]:
                day, clean_days = day + 1, clean_days + 1
        s = replace(s, day=day, today=today, sent=0, throttles=0, stepped=False,
                    clean_days=clean_days, step_backs=step_backs)
    if hour > s.hour:
        s = replace(s, hour=hour, sent_hour=0)
    return s


def observe(state: WarmState, schedule: Schedule, signal: Signal, at: float) -> WarmState:
    """Count one attempt of the IP (answered at ``at``) with what it said."""
    s = roll(state, schedule, at)
    if schedule.caps_for(s.day) is None:
        return replace(s, counted_at=max(s.counted_at, at))
    throttled = signal in (Signal.THROTTLE, Signal.LOCK)
    s = replace(s, sent=s.sent + 1, sent_hour=s.sent_hour + 1,
                throttles=s.throttles + throttled, counted_at=max(s.counted_at, at))
    if (throttled and not s.stepped and s.throttles >= STEP_MIN
            and s.throttles > STEP_RATE * s.sent):
        s = replace(s, day=max(1, s.day - 1), stepped=True, step_backs=s.step_backs + 1)
    return s


def status(state: WarmState, schedule: Schedule) -> WarmupStatus:
    """The snapshot the brain publishes (on the source IP's state record)."""
    c = caps(state, schedule)
    return WarmupStatus(day=state.day, days=len(schedule.daily),
                        daily_cap=c[0] if c else None, hourly_cap=c[1] if c else None,
                        sent_today=state.sent, sent_hour=state.sent_hour,
                        throttles_today=state.throttles, today=state.today, hour=state.hour,
                        clean_days=state.clean_days, step_backs=state.step_backs,
                        counted_at=state.counted_at)


def publish_due(old: WarmupStatus | None, new: WarmupStatus) -> bool:
    """Whether ``new`` is worth publishing over the last published ``old``: a changed day,
    cap or window, a cap reached, or ``PUBLISH_STEP`` of the hourly cap sent since."""
    if old is None or (old.day, old.daily_cap, old.today, old.hour, old.step_backs) != (
            new.day, new.daily_cap, new.today, new.hour, new.step_backs):
        return True
    if new.daily_cap is None or new.hourly_cap is None:
        return False
    if new.sent_today >= new.daily_cap or new.sent_hour >= new.hourly_cap:
        return new.sent_today != old.sent_today
    step = max(1, int(new.hourly_cap * PUBLISH_STEP))
    return new.sent_today - old.sent_today >= step


@dataclass(frozen=True)
class Pending:
    """A node's own attempts over an IP that the brain's snapshot has not counted yet, and
    those in flight, by the cap they count against: ``hour`` this UTC hour's, ``day``
    today's. They differ after an hour turned: an attempt late in the last hour no longer
    counts against this hour's cap, but still against the day's."""

    hour: int = 0
    day: int = 0


def pending(snap: WarmupStatus, now: float, uncounted: Iterable[float],
            inflight: int = 0) -> Pending:
    """``uncounted``: the times of this node's attempts the snapshot may not have counted
    (answered after its ``counted_at``, less the nodes' skew); ``inflight``: attempts not
    answered yet (they count in the current windows). A window begun since the snapshot
    holds only the attempts made in it: the earlier ones fall in a window the snapshot's
    counts (the brain's) already account for, or that is over."""
    times = list(uncounted)
    hour, today = int(now // HOUR), utc_day(now)
    in_hour = times if hour <= snap.hour else [t for t in times if t >= hour * HOUR]
    in_day = times if today <= snap.today else [t for t in times if t >= today * DAY]
    return Pending(len(in_hour) + inflight, len(in_day) + inflight)


def _pending(p: int | Pending) -> Pending:
    return p if isinstance(p, Pending) else Pending(p, p)


def remaining(snap: WarmupStatus, now: float, pending: int | Pending = 0,
              share: float = 1.0) -> int | None:
    """Attempts this node may still make over the IP now, given the brain's snapshot and the
    attempts it made (or has in flight) that the snapshot has not counted (``pending``; an
    int counts against both caps); None: no cap. A window that ended since the snapshot
    starts from zero, with the snapshot's caps (the brain judges the day).

    With several sender nodes on one IP, a node sees the others' attempts only in the next
    snapshot, so each takes ``share`` (its share of the ISP's partitions; the shares add up to
    1) of what the snapshot left, rounded down: together they never pass the cap. What a
    node's share leaves unused goes to the others at the next snapshot, which counts it."""
    if snap.daily_cap is None or snap.hourly_cap is None:
        return None
    p = _pending(pending)
    day_sent = snap.sent_today if utc_day(now) <= snap.today else 0
    hour_sent = snap.sent_hour if int(now // HOUR) <= snap.hour else 0
    day_left = max(0, snap.daily_cap - day_sent)
    hour_left = max(0, snap.hourly_cap - hour_sent)
    if share < 1.0:
        day_left = math.floor(day_left * share + 1e-9)
        hour_left = math.floor(hour_left * share + 1e-9)
    return max(0, min(day_left - p.day, hour_left - p.hour))


def free_at(snap: WarmupStatus, now: float, pending: int | Pending = 0) -> float:
    """When an IP whose caps are used up may send again: the next UTC hour, or day."""
    day_sent = (snap.sent_today if utc_day(now) <= snap.today else 0) + _pending(pending).day
    if snap.daily_cap is not None and day_sent >= snap.daily_cap:
        return (utc_day(now) + 1) * DAY
    return (int(now // HOUR) + 1) * HOUR
