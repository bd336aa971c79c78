"""Per-source-IP speed levels: where a new IP's level starts (``kmta.policy.ipspeed``). The
levels of one row apart are in tests/unit/test_brain_ipspeed.py."""

from __future__ import annotations

from dataclasses import replace

from kmta.policy.ipspeed import for_new_ip, lowest
from kmta.policy.speed import HOLD, PROBE, STARTUP, Signal, SpeedState, initial, observe
from schemas.rules import SpeedRule

RULE = SpeedRule(min=1, start=4)
TACT = 1.0
A, B = "192.0.2.1", "192.0.2.2"


def held(speed: float, now: float = 0.0) -> SpeedState:
    return initial(RULE, now, learned=speed)


def test_a_first_ip_of_a_cold_isp_starts_up_from_start() -> None:
    s = for_new_ip({}, RULE, 10.0)
    assert (s.mode, s.speed, s.period_start) == (STARTUP, 4, 10.0)


def test_ip_initial_is_a_learned_level_held_and_probed_from() -> None:
    s = for_new_ip({A: held(90.0)}, SpeedRule(min=1, start=4, ip_initial=30), 5.0)
    assert (s.mode, s.speed, s.floor) == (HOLD, 30, 30)


def test_a_new_ip_starts_at_the_lowest_level_without_its_history() -> None:
    busy = replace(held(60.0), clean=7, throttled=1, recent=((B, 1.0),), decreased_at=2.0,
                   cut_last=((f"{B}@n1", 2.0),), ceiling=70.0, last_cut="trim")
    s = for_new_ip({A: held(90.0), B: busy}, RULE, 50.0)
    assert (s.mode, s.speed, s.floor, s.ceiling) == (HOLD, 60.0, 60.0, 70.0)  # B's knowledge
    assert (s.clean, s.throttled, s.recent, s.decreased_at, s.cut_last, s.last_cut) == (
        0, 0, (), None, (), "")
    assert s.period_start == 50.0 and s.since == 50.0


def test_a_new_ip_during_a_cold_start_grows_on_from_the_same_speed() -> None:
    a = initial(RULE, 0.0)
    for i in range(200):  # A busy and clean for 10 s: startup doubled it twice
        a = observe(a, Signal.CLEAN, RULE, TACT, i * 0.05, A)
    s = for_new_ip({A: a}, RULE, 10.0)
    assert s.mode == STARTUP and s.speed == a.speed and s.speed > 2 * RULE.start


def test_a_probe_in_progress_hands_a_new_ip_its_floor() -> None:
    probing = replace(held(50.0), mode=PROBE, speed=55.0, floor=50.0)
    s = for_new_ip({A: probing}, RULE, 1.0)
    assert (s.mode, s.speed) == (HOLD, 50.0)


def test_the_shared_level_seeds_the_first_ip_of_a_row_from_before() -> None:
    s = for_new_ip({}, RULE, 3.0, shared=held(42.0))
    assert (s.mode, s.speed) == (HOLD, 42.0)
    assert lowest([]) is None and lowest([3.0, 1.5, 2.0]) == 1.5
