"""Adaptive speed per ISP, in messages per tact per source IP: find a provider's limit by
touching it about once, then hold just under it and probe above it rarely.

``observe(state, outcome, rule, tact, now) -> state`` is a pure reducer (bytewax-style): the
caller keeps the state in a table and passes the clock in. The provider's capacity is never
configured; the controller finds it. Its clock is elapsed time in seconds, never the tact (a
60 s tact would make every decision take a minute). Three modes:

* ``startup`` (a cold start, or after an idle stretch with nothing learned): the speed doubles
  every ``STARTUP_DOUBLING`` seconds of busy, clean sending, in steps of one decision period
  (smooth: the rate crosses the capacity gently, so the provider's burst allowance drains slowly
  and the first throttle arrives just above it). The first throttle is the **knee**: the speed
  drops to ``STARTUP_EXIT`` of the speed that got it, which becomes the ``ceiling``.
* ``hold``: the speed stays put. A level held clean and busy for ``VERIFY`` seconds becomes the
  ``floor`` (the highest level known to be clean). After ``wait`` seconds (longer after a failed
  probe near the ceiling, and never fewer than ``PROBE_MESSAGES`` messages per source IP, so
  that probes cost a bounded share of the attempts), a probe starts.
* ``probe``: the speed is raised above the floor by ``step`` (at least ``PROBE_MIN``; never past
  the geometric middle between floor and ceiling while a ceiling is known) and held for a time
  inversely proportional to the step (``PROBE_BURST / step``): a provider's burst allowance hides
  a small excess for longer. A probe held clean becomes the new floor and the next step doubles
  (a doubled capacity is found in a handful of probes); a throttled probe sets the ceiling and
  returns the speed to the floor at once.

A throttle while holding (not probing) means the capacity fell under the held level (a
reputation drop): the speed is cut by ``DROP`` and the floor is forgotten. Throttles within
``HOLDOFF`` seconds of a decrease only count: their messages were sent before the lower speed
reached the senders. Only busy periods count as clean (attempts reaching ``BUSY`` of what the
speed allowed for the source IPs seen: TCP's congestion window validation): a trickle proves
nothing about a higher speed.

A deep bucket (a per-minute count) hides an excess for long, so the knee comes at several times
the capacity: a throttle again after the knee cuts to ``ACCEPTED_CUT`` of the rate accepted
since the knee's first throttle (the bucket was empty then: that rate is its refill, the
capacity); a knee round that goes on past ``DEEP_ROUND`` throttles cuts deeper at once; and once
either fired (``deep``) probes are held ``DEEP_HOLD`` and capped at ``DEEP_STEP_MAX`` (the
bucket refills under the capacity and can pass a probe above it on those tokens), a refused
one goes back to the level ``confirmed`` right after the last cut (the bucket was empty then and
could hide nothing), or, refused above the rate accepted since that cut (measured over
``SUSTAINED_WINDOW``: the bucket's refill), just under that rate, and up to ``BUDGET_DEEP``
throttles within the window still allow probing. Any bucket: a level refused above the rate
accepted since the knee, with every level since above that rate (``_knee_refill``: the
refill), goes just under it rather than ``TRIM`` down.

``rule.max`` (None by default) is an operator's explicit cap and always holds; ``rule.min`` is a
floor that keeps probes going. A learned speed (``initial(..., learned=...)`` or a state kept
across a restart) starts in ``hold`` with that speed as its floor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum

from kmta.policy.classify import DELIVERED, GREYLIST, is_recipient_problem, is_throttle
from schemas.rules import SpeedRule

__all__ = [
    "BUSY",
    "DROP",
    "HOLD",
    "HOLDOFF",
    "PROBE",
    "PROBE_MAX",
    "PROBE_MIN",
    "STARTUP",
    "STARTUP_DOUBLING",
    "STARTUP_EXIT",
    "Signal",
    "SpeedState",
    "advance",
    "decision_period",
    "initial",
    "observe",
    "signal_for",
    "trace",
]

STARTUP_DOUBLING = 5.0
"""Seconds of busy, clean sending per doubling in startup (from 0.5 to 100 msg/s in ~38 s)."""

STARTUP_STEP_MAX = 1.25
"""At most this factor per decision period in startup: at low rates a period is long (two
messages per source IP: 4 s at 0.5 msg/s, a factor of 1.74 at the doubling rate), and a coarse
step overshoots a provider whose burst allowance is a single message (the sim's at <= 4 msg/s):
the first throttle comes at the first level above its limit, up to a whole step above it."""

STARTUP_FREE = 1.0
"""Messages per second per source IP below which startup grows at the doubling rate alone (a
low ``start`` stays cheap: 4/min holds a period of 30 s, and x64 after it lands here rather
than x1.25); a step never goes past this by more than ``STARTUP_STEP_MAX``."""

LAG = 0.6
"""Seconds from a raise decided by the brain to the senders sending at it (results and state
topic delays, the senders' raise delay): a throttle this soon after a raise was sent at the
speed before it, and the knee is taken from that speed."""

IN_FLIGHT = 0.1
"""Throttles from one source IP and node within ``HOLDOFF`` of a decrease count only (messages
sent before the cut reached the node) unless one comes more than this after that pair's
previous one: the node had already slowed that IP on its own (``LOCAL_SLOW``) or received the
brain's lower speed, and still got a throttle, so the lower level is too high too."""

STARTUP_EXIT = 0.75
"""The knee: the first throttle of a startup sets the speed to this share of the speed that got
it. The throttle arrives once the provider's burst allowance is drained, at ~1.3 x its capacity
with the sim's burst of capacity/4 and the doubling above: 0.7 lands at ~0.9 of the capacity."""

KNEE_SENT = 0.9
"""The knee is at most this share of the rate the last busy startup period delivered."""

DROP = 0.5
"""A throttle at a held level (the capacity fell): cut like TCP. The sender has already halved
the replying IP locally, so the brain's cut costs no second round of throttles."""

PROBE_MIN = 0.03
"""The smallest probe step (share of the floor)."""

PROBE_MAX = 0.25
"""The largest probe step. A probe that passed while above the capacity (its excess over the
capacity smaller than its step, so the burst allowance outlasted the hold) makes the next,
doubled step land far above it: at a few hundred messages per second a step of 1.0 put several
replies in flight into one round of throttles and earned a block. +25 % still finds a doubled
capacity within a minute (3, 6, 12, 24, 25, 25 %: x 2.4)."""

PROBE_BURST = 0.4
"""A probe of step ``e`` is held ``max(PROBE_HOLD_MIN, PROBE_BURST / e)`` seconds: an excess of
``e`` drains a burst allowance of ``b`` seconds' worth of capacity in ``b / e`` seconds."""

PROBE_HOLD_MIN = 2.0
DEEP_HOLD = 20.0
"""A probe's hold once a bucket showed it is deep (``SpeedState.deep``): it refills while the
speed is under the capacity and passes a probe above it on those tokens for as long as they
last."""

DEEP_STEP_MAX = 0.12
"""The largest probe step once a bucket showed it is deep. Steps escalate from ``PROBE_MIN``
as usual (3, 6, 12 %): +3 % per 20 s took minutes to climb from the knee round's cut (0.6-0.9
of the capacity) and never found a doubling. A probe that passes above the capacity on the
bucket's tokens is caught later and goes back to ``SpeedState.confirmed``; the cap bounds the
excess a failed probe is refused at (+25 %: more throttles per failure at 100 msg/s x 4 nodes
for the same utilisation, --burst 5)."""
VERIFY = 3.0
"""Seconds a level must stay clean and busy before it becomes the floor."""

PROBE_WAIT = 20.0
"""Seconds at the floor after a throttle before the next probe, while the ceiling is near
(within ``NEAR``): at most two failed probes per minute per source IP, far from a provider's
"K throttles in a minute -> block" with K as low as 5."""

PROBE_WAIT_FAR = 6.0
"""The same, while the ceiling is far above the floor (a search still converging)."""

NEAR = 2 * PROBE_MIN
"""Within this of the ceiling the floor is near it (the long wait applies): above, a bisection
step still gains more than ``PROBE_MIN`` and the next probe comes after ``PROBE_WAIT_FAR``."""
PROBE_MESSAGES = 100
"""A probe that fails costs about one deferral per source IP: no probe before this many
messages per source IP at the floor (< 2 % deferrals at 1 msg/s)."""

FALSE_PASS = 20.0
"""A throttle at a held level this soon after a probe passed reverts to the floor before it: a
burst allowance hides an excess of 1 % for ~25 s (the sim's: a quarter second of capacity); a
floor held clean for longer than this was no false pass, and a throttle there means the
capacity fell."""

BUDGET = 2
BUDGET_WINDOW = 60.0
"""No probe starts while a source IP has had more than ``BUDGET`` throttle replies within the
last ``BUDGET_WINDOW`` seconds (a failed probe costs about one per source IP and node). A
provider that
blocks after K throttles within a minute sees at most about 2 x nodes of them."""

BUDGET_DEEP = 3
"""``BUDGET`` once a bucket showed it is deep (``SpeedState.deep``): its probes start at
``PROBE_MIN`` and are capped at ``DEEP_STEP_MAX``, a small excess whose failure costs about one
throttle (it is refused once, and the refused node slows down before a second), so a knee round
of three leaves room for one (four within a minute, under a "5 in a minute" rule). Waiting out
the knee round's minute at its cut (0.6-0.9 of the capacity) cost 5-10 points of utilisation
with 5 s buckets; a knee round of four (one per node) still holds probes off."""

DEFER_SHARE = 0.015
"""A probe near the ceiling (within ``NEAR``: the search has converged, and it gains at most a
few per cent) starts only while the source IP's level would keep its throttled share of
attempts within this, counting that probe's failure (``SpeedState.attempts`` /
``deferred``): the deferral target is 2 %, and at 1 msg/s each throttle is 0.4 % of four
minutes' attempts (the knee and the search spend 3-4, a re-probe of a known ceiling every
``PROBE_MESSAGES`` made five: 2.1-2.2 %). At 10 msg/s and up it never binds before
``PROBE_WAIT``; a search probe (a ceiling far above the floor, or none) never waits for it."""

HIDING_MESSAGES = 10
"""Messages per source IP within ``VERIFY`` below which a probe is not suspected of having
passed on a burst allowance."""

HOLDOFF = 0.6
"""Seconds after a decrease during which further throttles only count."""
AGAIN = 5.0
"""A throttle this soon after a decrease (but after ``HOLDOFF``): the cut was not enough."""
TRIM = 0.97
"""The first throttle at a held level (not a probe): trim the speed by 3 %."""

AGAIN_CUT = 0.8
"""A throttle soon after a startup's knee cuts by this (the knee overshot at a low rate, where a
decision period is long)."""

ACCEPTED_CUT = 0.85
"""A throttle again after a knee (the knee's level was refused too) cuts to at most this share
of the rate accepted since the knee's first throttle: the provider's bucket was empty then, so
what it accepted since is its refill rate, the capacity (a bucket seconds deep hides an excess
for long, and the first throttle comes at several times the capacity: a cut from the speed,
x 0.75 then x 0.8, took four rounds of throttles to get under it and earned a block)."""

ACCEPTED_WINDOW = 0.2
"""Seconds since the knee's first throttle below which the rate accepted is not measured (by
the cut of a throttle again and by ``_deepen``)."""

ACCEPTED_MIN = 3
"""Clean replies since the knee below which the rate accepted is not measured: at about one
message a second a window of a second or two holds one or two, and the nodes' own slow-down
may have kept the sending under the capacity (the measure is then too low)."""

DEEP_ROUND = 2
"""Throttles after a knee's, within its hold-off, from which the round says the knee is far
above the capacity (a bucket seconds deep drained: every node is refused at once, and a node
slowed on its own is refused again); each further one cuts deeper at once (``_deepen``).
A quarter-second bucket gives at most one more (seeds 1-5 of the matrix)."""

DEEP_MAX = 2
"""Deepenings (``_deepen``) per hold-off: the throttles after them in the same hold-off were
sent before those cuts reached the nodes (at 100 msg/s x 1 node, 30 s bucket, a knee at
7.7 x: 8 in-flight replies within 0.1 s, one cut each, took the level from 766 to 2 msg/s, and
probes from there held 24 % of the capacity). Two (x 0.16 with the knee's x 0.75: 766 ->
80/s there) hold 115 % of the capacity on a 30 s bucket's tokens; if that is still over the
refill, a throttle after the hold-off cuts again (from the rate accepted by then). Three
(x 0.064) held 59-83 %. Two earned a block (one IP of 10 under "10 in a minute") while the
node's own slow-down ended at the brain's first, still high, cut; it no longer does
(``senders.lane.slow_holds``, docs/adaptive-speed.md step 18). A lock (the provider blocked)
cuts on each."""

DEEP_CUT = 0.4
"""``_deepen``'s cut while the rate accepted since the knee cannot be measured yet; also the
cut of a third round within ``AGAIN_FAST`` of the knee without replies enough to measure."""

AGAIN_FAST = 2.5
"""Seconds from the knee's first throttle within which a third round says the knee was far
above the capacity (1 msg/s, 30 s bucket: rounds 0.2-0.9 s apart from a knee at 6.9 x; a
shallow bucket's knee at 1.3-2.3 x is refused again every 2-4 s at that rate, and its third
round, 4.5 s after the knee at 1 msg/s x 10 IPs x 4 nodes, keeps the x 0.8)."""


CONFIRMED_WITHIN = 3.0
"""Deep bucket: a level whose verification began within this many seconds of a cut (the bucket
empty: a level above the capacity is refused at once) is ``SpeedState.confirmed``, a lower
bound the bucket could not fake; floors reached by probes later may have passed on refilled
tokens."""

SUSTAINED_WINDOW = 30.0
SUSTAINED_MIN = 30
"""Deep bucket: the seconds and clean replies since the last round of cuts from which the
rate accepted in between measures the bucket's refill (``_sustained``; +-1 message in 30 at
1 msg/s)."""

KNEE_MARGIN = 0.97
"""Any bucket: a level refused at a held level or a probe goes under the rate accepted since
the knee (``_knee_refill``) only while that rate is under this share of every level held since
the knee: the sending then exceeded the refill throughout (the bucket never filled, so that
rate is its refill, the capacity), not the senders delivering a hair under a level held under
the capacity (4 nodes deliver 98.6-99.1 % of it)."""

SUSTAINED_HOLD = 0.98
"""Deep bucket, a level refused above the measured refill rate: hold at this share of it (the
measure is a lower bound; 1 msg/s, 5 s bucket: 0.986 of the capacity over 78 s)."""

PERIOD = 1.0
"""The decision period when ``rule.adapt_every`` is 0."""

BUSY = 0.5
"""Share of the allowed volume a period must have used to count as clean."""

STARTUP, HOLD, PROBE = "startup", "hold", "probe"


class Signal(StrEnum):
    """What one delivery attempt says about the sending speed (equal to its string value)."""

    CLEAN = "clean"
    THROTTLE = "throttle"
    LOCK = "lock"
    NEUTRAL = "neutral"


def signal_for(
    category: str, reply_rule_action: str | None, *, temporary: bool = False
) -> Signal:
    """Map a classified reply (and the action of the reply rule it matched, if any) to an
    outcome. Lock beats throttle beats clean. ``temporary`` (a 4xx) makes a spam block count as
    a throttle (see ``classify.is_throttle``). Greylisting is clean for the speed: it concerns
    one (source IP, sender, recipient) triplet seen for the first time, not the rate (a domain
    that greylists every first attempt would otherwise never prove a busy period, and its
    first attempts, whose retries all wait out the greylisting delay, would trickle out at the
    start speed)."""
    if reply_rule_action == "lock":
        return Signal.LOCK
    if reply_rule_action == "throttle" or is_throttle(category, temporary=temporary):
        return Signal.THROTTLE
    if category in (DELIVERED, GREYLIST) or is_recipient_problem(category):
        return Signal.CLEAN
    return Signal.NEUTRAL


@dataclass(frozen=True)
class SpeedState:
    """The speed of one ISP, what the controller learned, and the current period's counts."""

    speed: float
    period_start: float
    clean: int = 0
    throttled: int = 0
    decreased_at: float | None = None
    mode: str = STARTUP
    floor: float | None = None  # highest speed held clean (per tact per source IP)
    ceiling: float | None = None  # lowest speed throttled since the floor was set
    since: float = 0.0  # when the current level started being verified
    next_probe_at: float = 0.0
    step: float = PROBE_MIN
    recent: tuple[tuple[str, float], ...] = ()  # (source IP, time) of throttles in the window
    prev_floor: float | None = None  # the floor before the last probe passed ...
    floor_at: float | None = None  # ... and when it passed
    cut_throttles: int = 0  # throttles seen since the last decrease ...
    cut_ips: tuple[str, ...] = ()  # ... and the source IPs (and nodes) they came from
    last_cut: str = ""  # the last cut: knee, probe, false, again, drop, trim, confirmed, refill
    sources: tuple[str, ...] = ()  # source IPs seen in the current period
    prior: float | None = None  # the speed before the last raise ...
    raised_at: float | None = None  # ... and when it was raised
    cut_last: tuple[tuple[str, float], ...] = ()  # (source@node, time) of its last throttle
    sent: float | None = None  # startup: the rate the last busy period delivered (as speed)
    refused_at: float | None = None  # the knee's first throttle (the bucket was empty) ...
    refused_clean: int = 0  # ... and the clean replies since
    deep: bool = False  # a knee's level was refused by far: a deep bucket (small, long probes)
    confirmed: float | None = None  # deep: a level verified while the bucket was empty
    knee_at: float | None = None  # the knee's first throttle, never restarted by later cuts ...
    knee_clean: int = 0  # ... the clean replies since ...
    knee_low: float | None = None  # ... and the lowest level held since (KNEE_REFILL)
    attempts: int = 0  # attempts answered clean or throttled at this level, ever ...
    deferred: int = 0  # ... and of them, throttled or locked (DEFER_SHARE)


_FIELDS = frozenset(f.name for f in fields(SpeedState))


def _replace(s: SpeedState, **changes: object) -> SpeedState:
    """``dataclasses.replace`` for a ``SpeedState``: a copy of its fields with ``changes``.
    The brain folds every delivery event through here (``observe``); the stock function
    rebuilds the instance through ``__init__`` (~8 us, this ~1 us). Valid because the class has
    no ``__post_init__``, no ``init=False`` field and no slots; an unknown name is an error."""
    if not changes.keys() <= _FIELDS:
        raise TypeError(f"SpeedState has no field {sorted(changes.keys() - _FIELDS)}")
    new = object.__new__(SpeedState)
    new.__dict__.update(s.__dict__)
    new.__dict__.update(changes)
    return new


def _cap(rule: SpeedRule) -> float:
    return rule.max if rule.max is not None else math.inf


def _clamp(speed: float, rule: SpeedRule) -> float:
    return min(max(speed, rule.min), _cap(rule))


def decision_period(rule: SpeedRule, tact: float, speed: float | None = None) -> float:
    """Seconds per decision period: ``rule.adapt_every``, or ``PERIOD`` when that is 0; long
    enough for two messages per source IP at ``speed`` (a period without a message proves
    nothing)."""
    base = rule.adapt_every or PERIOD
    if speed is None or speed <= 0:
        return base
    return max(base, min(2.0 * tact / speed, 60.0))


def _wait(state: SpeedState, tact: float) -> float:
    """Seconds at the floor before the next probe."""
    floor = state.floor if state.floor is not None else state.speed
    if state.ceiling is not None and state.ceiling > floor * (1 + NEAR):
        return PROBE_WAIT_FAR  # still searching: the ceiling is far
    return max(PROBE_WAIT, PROBE_MESSAGES / max(state.speed / tact, 1e-9))


def _probe_hold(floor: float, target: float, deep: bool = False) -> float:
    step = max(target / floor - 1.0, 1e-6)
    return max(DEEP_HOLD if deep else PROBE_HOLD_MIN, PROBE_BURST / step)


def _target(state: SpeedState, rule: SpeedRule) -> float:
    floor = state.floor if state.floor is not None else state.speed
    t = floor * (1.0 + min(state.step, DEEP_STEP_MAX if state.deep else PROBE_MAX))
    if state.ceiling is not None and state.ceiling > floor:
        t = min(t, math.sqrt(floor * state.ceiling))
    return min(max(t, floor * (1.0 + PROBE_MIN)), _cap(rule))


def initial(rule: SpeedRule, now: float, learned: float | None = None) -> SpeedState:
    """The starting state: a speed learned before a restart wins over ``rule.start``
    (default ``rule.min``); either is clamped into ``[min, max]``. Only a state without a
    learned speed starts in ``startup``; a learned speed is the floor and is probed from."""
    if learned is not None:
        speed = _clamp(learned, rule)
        return SpeedState(speed=speed, period_start=now, mode=HOLD, floor=speed, since=now,
                          next_probe_at=now + VERIFY)
    speed = _clamp(rule.start if rule.start is not None else rule.min, rule)
    return SpeedState(speed=speed, period_start=now, since=now)


def _close_period(s: SpeedState, rule: SpeedRule, tact: float, period: float) -> SpeedState:
    """Close the period [period_start, period_start + period) and apply what it proved."""
    end = s.period_start + period
    allowed = s.speed * period / tact * max(1, len(s.sources))
    busy = s.clean > 0 and s.throttled == 0 and s.clean >= BUSY * allowed
    nxt = _replace(s, period_start=end, clean=0, throttled=0, sources=())
    if s.throttled:
        return nxt
    if not busy:
        # a light period verifies nothing: the level is verified again from here
        return _replace(nxt, since=end, next_probe_at=max(s.next_probe_at, end))
    if s.mode == STARTUP:
        nxt = _replace(nxt, sent=s.clean * tact / period / max(1, len(s.sources)))
        grown = s.speed * 2.0 ** (period / STARTUP_DOUBLING)
        if grown > STARTUP_FREE * tact:  # near the range of real limits: fine steps
            grown = min(grown, max(STARTUP_FREE * tact, s.speed * STARTUP_STEP_MAX))
        grown = _clamp(grown, rule)
        return _replace(nxt, speed=grown, since=end)
    held = end - s.since
    if s.mode == PROBE:
        if held >= _probe_hold(s.floor or s.speed, s.speed, s.deep):
            if s.ceiling is not None and s.ceiling > s.speed * (1 + PROBE_MIN):
                # below the ceiling: escalate, the geometric middle caps the step
                ceiling, step = s.ceiling, min(s.step * 2, PROBE_MAX)
            else:  # above every level throttled so far: escalate from a small step
                ceiling = None
                step = min(s.step * 2, PROBE_MAX) if s.ceiling is None else 2 * PROBE_MIN
                if (s.ceiling is not None and s.last_cut == "false"
                        and s.speed >= s.ceiling * (1 - 1e-9)):
                    # this probe was that ceiling itself, a floor reverted as a false pass
                    # (not a refused level): passing it again confirms it, it does not say
                    # the capacity rose. An escalated +6 % was refused within VERIFY and
                    # reverted again, a cycle at 0.947 of the capacity (5 msg/s x 4 nodes:
                    # 93.1-93.5 %). A pass below that ceiling escalates as before
                    step = PROBE_MIN
            passed = _replace(nxt, floor=s.speed, ceiling=ceiling, step=step, since=end,
                              prev_floor=s.floor, floor_at=end)
            if (s.ceiling is not None and ceiling is None and s.speed < s.ceiling
                    and not _deferrals_left(_replace(passed, ceiling=s.ceiling))):
                # passed just under a level refused before (within PROBE_MIN): the next step
                # goes above it, a re-probe of a known ceiling that gains a few per cent and
                # most likely costs a throttle. It waits for the deferral share like a probe
                # from a held floor (which it bypassed by chaining on a pass); the ceiling
                # stays, so the held floor's gate sees it too
                return _replace(passed, ceiling=s.ceiling, mode=HOLD,
                                next_probe_at=end + _wait(passed, tact))
            return _start_probe(passed, rule, end)
        return nxt
    # hold
    if s.floor != s.speed:
        if held < VERIFY:
            return nxt
        nxt = _replace(nxt, floor=s.speed)
        if (s.deep and s.decreased_at is not None
                and s.since - s.decreased_at <= CONFIRMED_WITHIN):
            # verified right after a cut: the bucket was empty, it hid nothing
            nxt = _replace(nxt, confirmed=s.speed)
    if (end >= nxt.next_probe_at and s.speed < _cap(rule) and _budget_left(s, end)
            and _deferrals_left(nxt)):
        return _start_probe(nxt, rule, end)
    return nxt


def _start_probe(s: SpeedState, rule: SpeedRule, now: float) -> SpeedState:
    target = _target(s, rule)
    if target <= s.speed:
        return _replace(s, mode=HOLD)
    return _replace(s, mode=PROBE, speed=target, since=now)


def _in_effect(s: SpeedState, tact: float, now: float) -> float:
    """The speed a throttle answered at ``now`` was most likely sent at: the speed before the
    last raise until the senders had it (``LAG``) and sent two messages per source IP at it
    (a token bucket refuses the second of two messages too close together)."""
    if (s.prior is not None and s.raised_at is not None
            and now - s.raised_at < LAG + min(2.0 * tact / max(s.speed, 1e-9), 60.0)):
        return min(s.prior, s.speed)
    return s.speed


def advance(state: SpeedState, rule: SpeedRule, tact: float, now: float) -> SpeedState:
    """Close the decision period(s) that ended before ``now`` (a busy, clean period grows a
    startup, verifies a held level, passes a probe or starts one; empty periods, when time
    jumped, verify nothing). Also re-clamps the speed, so that a live edit of min/max takes
    effect."""
    s = state
    period = decision_period(rule, tact, s.speed)
    speed = _clamp(s.speed, rule)
    if speed != s.speed:
        s = _replace(s, speed=speed, floor=None if s.floor is None else min(s.floor, speed))
    if now < s.period_start + period:
        return s
    before = s.speed
    s = _close_period(s, rule, tact, period)
    if s.speed > before:  # decided now (results arrive after their period ended)
        s = _replace(s, prior=before, raised_at=now)
    if now >= s.period_start + period:  # idle periods: nothing was sent, nothing verified
        skipped = math.floor((now - s.period_start) / period)
        start = s.period_start + skipped * period
        s = _replace(s, period_start=start, since=start,
                     next_probe_at=max(s.next_probe_at, start))
    return s


def _decrease(s: SpeedState, rule: SpeedRule, tact: float, now: float) -> SpeedState:
    """One decrease. The first throttle after a while: a startup's knee, a failed probe (back
    to the floor), a throttle at a floor that a probe passed only recently (back to the floor
    before it: the provider's burst allowance hid the excess), else a drop (the capacity fell).
    A throttle again within ``AGAIN`` seconds says the last cut was not enough: after a failed
    probe, back to the floor before; after a knee, ``AGAIN_CUT``; else a drop."""
    prev, at = None, None
    again = s.decreased_at is not None and now - s.decreased_at < AGAIN
    false_pass = (s.prev_floor is not None and s.floor_at is not None
                  and now - s.floor_at < FALSE_PASS and s.prev_floor < s.speed)
    if again:
        # a second round of throttles within AGAIN: the capacity fell (or the floor passed
        # falsely: the same pattern). A third round could reach a provider's "K in a minute"
        # with two nodes per IP, so this cut must hold: a drop, never the floor before
        kind = "again" if s.last_cut in ("knee", "again") else "drop"
        if s.last_cut == "probe" and _unproven(s, tact, now):
            # refused again at the floor a failed probe went back to, a floor whose pass held
            # too few messages to tell it from an excess (at 0.5/s a +25 % probe held 2 s holds
            # one message per source IP, and passed at 1.17 x the capacity): it passed falsely,
            # and the floor before it was held clean for longer. Back there, not a halving
            kind = "false"
    elif s.mode == STARTUP:
        kind = "knee"
    elif s.mode == PROBE and s.floor is not None:
        # a probe refused within VERIFY of its floor passing: that floor likely
        # passed only on the burst allowance (its excess over the capacity smaller than its
        # step), so back to the floor before it rather than to a level that throttles next
        # (only where VERIFY holds enough messages per IP for a burst allowance to hide an
        # excess: at a few per second the first message too many is refused at once)
        recent_pass = (s.prev_floor is not None
                       and s.floor_at is not None and now - s.floor_at < VERIFY
                       and s.speed / tact * VERIFY >= HIDING_MESSAGES)
        kind = "false" if recent_pass else "probe"
    else:
        kind = "false" if false_pass else "trim"
    floor, confirmed = s.floor, s.confirmed
    if (s.deep and kind in ("probe", "trim", "false") and confirmed is not None
            and floor is not None and confirmed < floor):
        # a deep bucket hides a small excess for minutes: +3 % probes held 20 s passed one
        # after another above the capacity (100 -> 113 % on a 5 s bucket), and going back to
        # the last floor (above it too) drew a second round and a halving. Back to the level
        # confirmed right after the last cut; the floor that may have passed falsely is the
        # ceiling
        back, ceiling = confirmed, min(s.speed, floor)
        sustained = _sustained(s, tact, now)
        if (sustained is not None and s.speed > sustained
                and SUSTAINED_HOLD * sustained > confirmed):
            # refused above the rate the provider accepted since the bucket was last found
            # empty: that rate is its refill (a lower bound), measured over long enough to
            # hide nothing. Hold just under it, not at the knee round's cut (0.8 of it at
            # 1 msg/s, 5 s bucket), and take it as the ceiling: probes above it pass on
            # tokens the level under it refilled and fail later, a throttle each (five in
            # 240 messages: 2.07 % deferred)
            back = SUSTAINED_HOLD * sustained
            ceiling = max(min(ceiling, sustained), back * (1 + PROBE_MIN))
        s = _replace(s, ceiling=ceiling, floor=back, confirmed=back,
                     speed=_clamp(back, rule))
        kind = "confirmed"
    elif kind == "knee":
        # cut from the speed the throttled message was most likely sent at, not a raise after
        # it. The ceiling is the speed now, an upper bound (past LAG the attribution is a
        # guess: at 1 msg/s a throttle 0.9 s after a raise to 1.09 was charged to 0.87, under
        # the capacity, and a ceiling there made every probe a small, slow one), unless the
        # raise came too late for the senders to have sent at it (decided within LAG, at a
        # low rate often by this very event's period): the level before it was refused, the
        # ceiling. A raise's level as the ceiling made a wide search at 0.5 msg/s (0.871
        # over a refused 0.5: three of its probes refused, 3.45 % of the attempts)
        sent = _in_effect(s, tact, now)
        surely = (s.prior is not None and s.raised_at is not None
                  and now - s.raised_at < LAG)
        knee = sent * STARTUP_EXIT
        if s.sent is not None:
            # never above what the senders actually delivered: with several nodes on a shared
            # grid the sending can lag a fast-growing speed, and a knee from the speed alone
            # lands above the capacity (three rounds of throttles at 1 msg/s x 4 nodes)
            knee = min(knee, s.sent * KNEE_SENT)
        s = _replace(s, ceiling=sent if surely else s.speed, floor=None,
                     speed=_clamp(knee, rule), sent=None)
        s = _replace(s, knee_at=now, knee_clean=0, knee_low=s.speed)
    elif kind == "probe":
        # back to the floor; the floor before it is kept in case this floor was a false pass
        s = _replace(s, ceiling=s.speed, speed=_clamp(s.floor or s.speed, rule))
        prev, at = s.prev_floor, s.floor_at
    elif kind == "trim":
        # one throttle at a level held clean: most often a floor a hair above the capacity
        # (a burst allowance hides 1 % for half a minute); if the capacity fell instead, the
        # throttles go on and the next one drops (AGAIN)
        s = _replace(s, ceiling=s.speed, floor=None, speed=_clamp(s.speed * TRIM, rule))
    elif kind == "false":
        # the floor that passed falsely is above the capacity: it is the ceiling (the refused
        # level above it only bounds it), else the next bisection lands between the two and
        # passes falsely again (a probe's excess over the capacity is smaller than its step)
        s = _replace(s, ceiling=min(s.speed, s.floor or s.speed), floor=s.prev_floor,
                     speed=_clamp(s.prev_floor or s.speed, rule))
    else:
        # the capacity fell, by how much is unknown: cut, then probe back up in growing steps
        # rather than bisecting (a halving would otherwise cost a failed probe per bisection)
        cut = AGAIN_CUT if kind == "again" else DROP
        speed, deep = s.speed * cut, s.deep
        accepted = _accepted(s, tact, now) if kind == "again" else None
        if accepted is not None and ACCEPTED_CUT * accepted < speed:
            # the knee's level was refused by far: what the provider accepted meanwhile is
            # its capacity, and a bucket that hid that excess is deep
            speed, deep = ACCEPTED_CUT * accepted, True
        elif (accepted is None and kind == "again" and s.last_cut == "again"
              and s.refused_at is not None and now - s.refused_at <= AGAIN_FAST):
            # a third round soon after the knee, and too few replies to measure what the
            # provider accepts (about one a second): the knee was far above the capacity; x 0.8
            # a round took five rounds from a 30 s bucket's knee at 6.9 x and earned the block
            speed, deep = s.speed * DEEP_CUT, True
        s = _replace(s, ceiling=s.speed, floor=None, speed=_clamp(speed, rule), deep=deep)
    refill = _knee_refill(s, tact, now) if kind in ("probe", "trim", "false", "confirmed") \
        else None
    if refill is not None and s.speed > SUSTAINED_HOLD * refill:
        # refused again at a level above the rate the provider accepted since the knee, with
        # every level since above that rate: its refill. A trim of 3 % or the floor of a
        # failed probe left it over (0.7 msg/s, 5 s bucket: the knee's cut at 1.07 x passed on
        # the tokens, and two trims led to the fifth throttle within a minute)
        back = SUSTAINED_HOLD * refill
        s = _replace(s, floor=back, speed=_clamp(back, rule),
                     ceiling=max(min(s.ceiling or refill, refill), back * (1 + PROBE_MIN)),
                     confirmed=back if s.deep else s.confirmed, prev_floor=None,
                     floor_at=None)
        prev, at, kind = None, None, "refill"
    step = 2 * PROBE_MIN if kind in ("drop", "again") else 1.0  # 1.0: bisect to the ceiling
    if kind != "again":  # a new round of cuts: the bucket is empty now
        s = _replace(s, refused_at=now, refused_clean=0)
    s = _replace(s, mode=HOLD, step=step, decreased_at=now, since=now, prev_floor=prev,
                 floor_at=at, last_cut=kind, cut_throttles=0, cut_ips=(), prior=None,
                 raised_at=None, knee_low=_low(s))
    return _replace(s, next_probe_at=now + _wait(s, tact))


def _unproven(s: SpeedState, tact: float, now: float) -> bool:
    """True while the floor a probe passed has been sent fewer messages per source IP (its
    probe's hold and since) than a token bucket one message deep takes to refuse an excess of
    that probe's step ``e``: ``(1 + e) / e`` (5 at +25 %; a bucket deeper than one message
    takes longer, which ``PROBE_BURST`` covers)."""
    if s.prev_floor is None or s.floor_at is None or s.floor is None:
        return False
    step = s.floor / s.prev_floor - 1.0
    if step <= 0:
        return False
    held = _probe_hold(s.prev_floor, s.floor, s.deep) + max(now - s.floor_at, 0.0)
    return held * s.floor / tact < (1.0 + step) / step


def _deepen(s: SpeedState, rule: SpeedRule, tact: float, now: float) -> SpeedState:
    """A throttle in a knee's hold-off beyond ``DEEP_ROUND``: the knee's level is far above the
    capacity; cut to ``ACCEPTED_CUT`` of the rate accepted since the knee, or by ``DEEP_CUT``
    while that window is too short. The hold-off stays the knee's."""
    accepted = _accepted(s, tact, now)
    speed = ACCEPTED_CUT * accepted if accepted is not None else s.speed * DEEP_CUT
    s = _replace(s, speed=_clamp(min(s.speed, speed), rule), deep=True)
    return _replace(s, knee_low=_low(s))


def _low(s: SpeedState) -> float | None:
    """``knee_low`` with the speed now held."""
    return None if s.knee_low is None else min(s.knee_low, s.speed)


def _accepted(s: SpeedState, tact: float, now: float) -> float | None:
    """The rate (as a speed) the provider accepted since the knee's first throttle, per source
    IP; None when that window is too short to tell."""
    return _rate_since(s, s.refused_at, s.refused_clean, tact, now, ACCEPTED_WINDOW,
                       ACCEPTED_MIN)


def _rate_since(s: SpeedState, at: float | None, clean: int, tact: float, now: float,
                window: float, least: int) -> float | None:
    """The rate (as a speed per source IP) of ``clean`` replies since ``at``; None before
    ``window`` seconds and ``least`` replies."""
    if at is None or now - at < window or clean < least:
        return None
    return clean / (now - at) / max(1, len(s.sources)) * tact


def _sustained(s: SpeedState, tact: float, now: float) -> float | None:
    """Deep bucket: the rate (as a speed per source IP) the provider accepted since the last
    round of cuts began (``refused_at``: the bucket was empty then, and is again at a throttle
    now), over at least ``SUSTAINED_WINDOW`` seconds and ``SUSTAINED_MIN`` replies; None
    before. Between two moments the bucket was empty it accepted its refill, less what
    overflowed a full bucket: a lower bound of the capacity, tight while the level stayed
    near it."""
    return _rate_since(s, s.refused_at, s.refused_clean, tact, now, SUSTAINED_WINDOW,
                       SUSTAINED_MIN)


def _knee_refill(s: SpeedState, tact: float, now: float) -> float | None:
    """Any bucket: the rate (as a speed per source IP) the provider accepted since the knee's
    first throttle (the bucket was empty then, and is again at a throttle now), over at least
    ``SUSTAINED_WINDOW`` seconds and ``SUSTAINED_MIN`` replies, when it is under
    ``KNEE_MARGIN`` of every level held since (the sending exceeded it throughout, so the
    bucket never filled and nothing overflowed: the refill, the capacity); None otherwise.
    Later cuts (probe refusals, trims) do not restart it, unlike ``_sustained``."""
    rate = _rate_since(s, s.knee_at, s.knee_clean, tact, now, SUSTAINED_WINDOW, SUSTAINED_MIN)
    if rate is None or s.knee_low is None:
        return None
    return rate if rate < KNEE_MARGIN * s.knee_low else None


def _budget_left(s: SpeedState, now: float) -> bool:
    """True when no source IP had more than ``BUDGET`` (``BUDGET_DEEP``) throttles in the
    window."""
    budget = BUDGET_DEEP if s.deep else BUDGET
    counts: dict[str, int] = {}
    for ip, t in s.recent:
        if t > now - BUDGET_WINDOW:
            counts[ip] = counts.get(ip, 0) + 1
    return max(counts.values(), default=0) <= budget


def _deferrals_left(s: SpeedState) -> bool:
    """True unless a probe near the ceiling, failing, would put the level's throttled share of
    attempts over ``DEFER_SHARE``."""
    floor = s.floor if s.floor is not None else s.speed
    if s.ceiling is None or s.ceiling > floor * (1 + NEAR):
        return True  # a search: the probe may gain much
    return s.deferred + 1 <= DEFER_SHARE * s.attempts


def observe(
    state: SpeedState,
    outcome: Signal,
    rule: SpeedRule,
    tact: float,
    now: float,
    source: str | None = None,
    node: str | None = None,
) -> SpeedState:
    """Fold one outcome at time ``now`` (of an attempt from source IP ``source``, sent by
    sender node ``node``) into the state."""
    state = advance(state, rule, tact, now)
    if source and source not in state.sources and outcome is not Signal.NEUTRAL:
        state = _replace(state, sources=tuple(sorted((*state.sources, source))))
    if outcome in (Signal.THROTTLE, Signal.LOCK):
        ips, who = state.cut_ips, f"{source or ''}@{node or ''}"
        if who not in ips:
            ips = (*ips, who)
        recent = (*((ip, t) for ip, t in state.recent if t > now - BUDGET_WINDOW),
                  (source or "", now))
        last = dict(state.cut_last)
        repeated = who in last and now - last[who] > IN_FLIGHT
        last[who] = now
        state = _replace(state, throttled=state.throttled + 1,
                         cut_throttles=state.cut_throttles + 1, cut_ips=ips, recent=recent,
                         cut_last=tuple(sorted(last.items())), attempts=state.attempts + 1,
                         deferred=state.deferred + 1)
        if (state.decreased_at is not None and now - state.decreased_at < HOLDOFF
                and not repeated):
            if (state.last_cut in ("knee", "again") and state.cut_throttles >= DEEP_ROUND
                    and (state.cut_throttles < DEEP_ROUND + DEEP_MAX
                         or outcome is Signal.LOCK)):
                return _deepen(state, rule, tact, now)
            return state
        return _replace(_decrease(state, rule, tact, now), cut_last=((who, now),))
    if outcome is Signal.CLEAN:
        # a reply counts for the rate accepted since the knee only if the provider gave it
        # after the knee's first throttle (results arrive out of order, late by up to ~0.2 s)
        since = state.refused_at is not None and now >= state.refused_at
        after_knee = state.knee_at is not None and now >= state.knee_at
        return _replace(state, clean=state.clean + 1,
                        refused_clean=state.refused_clean + since,
                        knee_clean=state.knee_clean + after_knee,
                        attempts=state.attempts + 1)
    return state


def trace(
    rule: SpeedRule,
    tact: float,
    events: Iterable[tuple[float, Signal] | tuple[float, Signal, str | None]],
    start: float,
    learned: float | None = None,
) -> list[tuple[float, float]]:
    """``(time, speed)`` after each event, starting from ``initial(rule, start, learned)``;
    an event may carry its source IP as a third item."""
    state = initial(rule, start, learned)
    out: list[tuple[float, float]] = []
    for now, outcome, *source in events:
        state = observe(state, outcome, rule, tact, now, source[0] if source else None)
        out.append((now, state.speed))
    return out
