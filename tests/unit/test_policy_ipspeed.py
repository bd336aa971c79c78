"""Per-source-IP speed levels: where a new IP's level starts (``kmta.policy.ipspeed``). The
brain's levels of one row are in tests/unit/test_brain_ipspeed.py; here also the closed loop
with two IPs of different capacities (tests/speedloop.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kmta.policy.ipspeed import for_new_ip, lowest
from kmta.policy.kb import KnowledgeBase
from kmta.policy.speed import HOLD, PROBE, STARTUP, Signal, SpeedState, initial, observe
from schemas.rules import SpeedRule
from tests.speedloop import LoopCase, run

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


@pytest.mark.parametrize(("capacity", "nodes"), [(10.0, 2), (100.0, 4)])
def test_closed_loop_each_ip_of_a_pool_finds_its_own_capacity(capacity: float,
                                                              nodes: int) -> None:
    """Two source IPs, the first accepted at half the capacity of the second (the shipped
    rule, the simulator's provider): with a level per IP each IP is used near its own
    capacity; with one shared level the slow IP's throttles hold the fast one near half."""
    rule = KnowledgeBase.load().effective("unknown.example").speed
    results = {}
    for per_ip in (True, False):
        case = LoopCase(capacity=capacity, ips=2, nodes=nodes, block_after=5, duration=180,
                        ip_capacity=(capacity / 2,),
                        rule=rule.model_copy(update={"per_ip": per_ip}))
        r = run(case)
        slow, fast = list(r.ip_accepted)
        results[per_ip] = (r.ip_utilisation(slow, 60), r.ip_utilisation(fast, 60), r)
    slow_u, fast_u, r = results[True]
    assert slow_u >= 0.9 and fast_u >= 0.9, results
    assert r.blocks == 0 and r.deferral_share() <= 0.02
    assert results[False][1] < 0.6  # shared: the fast IP held near the slow one's rate
