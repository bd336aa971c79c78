"""Park-until arithmetic: when a message that cannot be sent now comes back."""

from __future__ import annotations

import math

import pytest

from kmta.policy.parking import (
    FULL_PARK_MIN,
    PARK_HELD_AFTER,
    PAUSED_PARK,
    held_until,
    must_flow,
    park_until,
)

NOW = 1_000_000.0


def test_a_locked_lane_parks_until_the_lock_ends() -> None:
    assert park_until(NOW + 600, 10, 5.0, NOW) == NOW + 600


def test_a_paused_lane_parks_for_a_while() -> None:
    assert park_until(math.inf, 10, 5.0, NOW) == NOW + PAUSED_PARK


@pytest.mark.parametrize(("backlog", "rate", "after"), [
    (1000, 10.0, 50.0),          # half the backlog at the lane's rate
    (10, 10.0, FULL_PARK_MIN),   # never sooner than the minimum
    (100, 0.0, 5000.0),          # a stopped rate counts as 0.01/s
])
def test_a_full_lane_parks_until_half_its_backlog_went_out(backlog: int, rate: float,
                                                           after: float) -> None:
    assert park_until(None, backlog, rate, NOW) == pytest.approx(NOW + after)


def test_held_messages_are_parked_only_for_a_long_block() -> None:
    assert held_until(None, NOW) is None
    assert held_until(NOW + PARK_HELD_AFTER - 1, NOW) is None
    assert held_until(NOW + 3600, NOW) == NOW + 3600
    assert held_until(math.inf, NOW) == NOW + PAUSED_PARK


@pytest.mark.parametrize(("dedicated", "blocked", "pools", "isp_blocked", "flows"), [
    (False, False, 1, False, True),   # shared partition: always flows
    (True, False, 2, False, False),   # the ISP's own, full, not blocked: waits
    (True, True, 1, False, False),    # the ISP's own, one pool: waits
    (True, True, 2, False, True),     # one pool of several blocked: the others go on
    (True, True, 2, True, False),     # the whole ISP blocked: waits
])
def test_must_flow(dedicated: bool, blocked: bool, pools: int, isp_blocked: bool,
                   flows: bool) -> None:
    assert must_flow(dedicated, blocked, pools, isp_blocked) is flows
