"""Rules narrowed per source-IP pool: merging and validation (knowledge base), pool-scope locks
and pauses (brain), and what a sender lane of each pool may do (lane)."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from kmta.policy.kb import SHIPPED_ISPS, KnowledgeBase, RulesError
from schemas import ControlAction, ControlCommand, DeliveryEvent, IspState, Status
from senders.lane import Lane
from streams.brain import Row, apply_command, apply_event, states_of

SHIPPED: dict[str, Any] = tomllib.loads(SHIPPED_ISPS.read_text(encoding="utf-8"))
NOW = 1_800_000_000.0

BLOCK = {"name": "warm_block", "match": r"^554 .*warm-up", "action": "lock",
         "duration": "1h", "scope": "pool", "source": "test"}
OVERRIDE: dict[str, Any] = {
    "default": {"pools": {"warm": {"speed": {"max": 20}, "sending": {"max_connections": 2}}}},
    "isp": {"gmail": {"pools": {"warm": {"speed": {"max": 3}, "replies": [BLOCK]}}}},
}
KB = KnowledgeBase.from_dicts(SHIPPED, OVERRIDE)


# -- knowledge base ---------------------------------------------------------------------------
def test_a_pool_narrows_every_isp_and_its_own_tables_win() -> None:
    whole, warm = KB.effective("gmail"), KB.effective("gmail", pool="warm")
    assert whole.speed.max is None and whole.sending.max_connections > 2
    # [isp.gmail.pools.warm] beats [default.pools.warm]; the shipped min (5) is pulled under
    # the pool's cap instead of failing, and so is the first guess (start)
    assert (warm.speed.min, warm.speed.max, warm.speed.start) == (3, 3, 3)
    assert warm.sending.max_connections == 2
    assert warm.sending.tact == whole.sending.tact  # what the pool does not say is the ISP's
    # the pool's reply rules come before the ISP's, which are all still there
    assert [r.name for r in warm.replies] == ["warm_block"] + [r.name for r in whole.replies]
    yahoo = KB.effective("yahoo", pool="warm")
    assert yahoo.speed.max == 20 and "warm_block" not in {r.name for r in yahoo.replies}
    # a pool without tables of its own (or no pool) is the ISP's rule itself
    assert KB.effective("gmail", pool="main") == whole
    assert KB.effective("example.org", pool="warm").speed.max == 20


def test_a_live_edit_of_a_pool_goes_over_the_files() -> None:
    live = {"speed": {"max": 50}, "pools": {"warm": {"speed": {"max": 2}}}}
    assert KB.validate_live("gmail", live).speed.max == 50
    assert KB.effective("gmail", live, "warm").speed.max == 2


@pytest.mark.parametrize(("override", "needle"), [
    ({"isp": {"gmail": {"pools": {"warm": {"speedd": {"max": 1}}}}}},
     "isp.gmail.pools.warm.speedd: unknown key"),
    ({"default": {"pools": {"warm": {"replies": [{**BLOCK, "match": "("}]}}}},
     "default.pools.warm.replies[0](warm_block).match: bad regex"),
    ({"isp": {"gmail": {"pools": {"warm": {"replies": [BLOCK, BLOCK]}}}}},
     "isp.gmail.pools.warm.replies[1](warm_block).name: duplicate rule name"),
    ({"isp": {"gmail": {"pools": {"warm": {"replies": [{**BLOCK, "scope": "node"}]}}}}},
     "scope"),
    # gmail has 2 partitions: a pool capped at 1 connection would starve one of them
    ({"isp": {"gmail": {"pools": {"warm": {"sending": {"max_connections": 1}}}}}},
     "isp.gmail (pool warm).partitions: 2 partitions but sending.max_connections is 1"),
    ({"default": {"pools": {"warm": {"speed": {"min": 5000, "max": 100}}}}},
     "(pool warm).speed: speed.min (5000.0) is above speed.max"),
])
def test_pool_tables_are_checked_like_the_rest(override: dict, needle: str) -> None:
    with pytest.raises(RulesError) as e:
        KnowledgeBase.from_dicts(SHIPPED, override)
    assert needle in str(e.value)


def test_a_live_edit_is_checked_against_every_pool_it_meets() -> None:
    # fine for the ISP alone, impossible once the warm pool's cap applies
    with pytest.raises(RulesError, match=r"isp.gmail \(pool warm\).speed: speed.min"):
        KB.validate_live("gmail", {"pools": {"warm": {"speed": {"min": 10}}}})
    with pytest.raises(RulesError, match=r"pools\.warm: Input should be a valid dictionary"):
        KB.validate_live("gmail", {"pools": {"warm": 3}})


# -- brain --------------------------------------------------------------------------------------
def _event(pool: str | None, ip: str, response: str, code: int = 554) -> DeliveryEvent:
    return DeliveryEvent(id="m1", status=Status.BOUNCED, final=True, isp="gmail",
                         to="a@gmail.com", code=code, enhanced_code="5.7.1",
                         response=response, source_ip=ip, pool=pool, timestamp=NOW)


def _published(row: Row) -> dict[str, IspState]:
    return {s.key: s for s in states_of(row, KB.effective("gmail"), NOW)}


def test_a_pool_scope_reply_locks_only_that_pool() -> None:
    row = Row(isp="gmail")
    assert apply_event(row, _event("warm", "192.0.2.1", "554 5.7.1 warm-up limit hit"), KB, NOW)
    st = _published(row)
    assert st["gmail@warm"].locked_until == NOW + 3600
    assert st["gmail@warm"].lock_reason == "warm_block"
    assert not st["gmail"].locked(NOW)
    ip = st["gmail|192.0.2.1"]  # the IP's record carries its speed level ...
    assert ip.speed is not None and not ip.locked(NOW)  # ... the pool is locked, not the IP
    # the same reply from another pool matches none of the warm pool's rules
    other = Row(isp="gmail")
    apply_event(other, _event("main", "192.0.2.9", "554 5.7.1 warm-up limit hit"), KB, NOW)
    assert set(_published(other)) == {"gmail"} and not _published(other)["gmail"].locked(NOW)


def test_operators_pause_and_unlock_one_pool() -> None:
    row = Row(isp="gmail")
    apply_event(row, _event("warm", "192.0.2.1", "554 5.7.1 warm-up limit hit"), KB, NOW)

    def cmd(action: ControlAction, **kw: Any) -> ControlCommand:
        return ControlCommand(id="c", action=action, isp="gmail", actor="t", timestamp=NOW, **kw)

    apply_command(row, cmd(ControlAction.PAUSE, pool="main"), KB, NOW)
    apply_command(row, cmd(ControlAction.UNLOCK, pool="warm"), KB, NOW)
    st = _published(row)
    assert st["gmail@main"].paused and not st["gmail"].paused
    assert not st["gmail@warm"].locked(NOW) and not st["gmail@warm"].paused
    apply_command(row, cmd(ControlAction.RESUME, pool="main"), KB, NOW)
    assert not _published(row)["gmail@main"].paused


# -- sender lanes -------------------------------------------------------------------------------
def _lane(pool: str, ips: list[str | None]) -> Lane:
    return Lane("gmail", pool, KB.effective("gmail", pool=pool), ips, pool_name=pool)


def test_each_pool_lane_obeys_its_own_pool_state_and_cap() -> None:
    warm, main = _lane("warm", ["127.0.0.2"]), _lane("main", ["127.0.0.3"])
    whole = IspState(isp="gmail", speed=600.0)
    locked = IspState(isp="gmail", pool="warm", locked_until=NOW + 60)
    for lane in (warm, main):
        lane.brain_state(whole, NOW)
        lane.brain_state(locked, NOW)  # a lane takes only its own pool's record
    assert warm.blocked_until(NOW) == NOW + 60 and warm.isp_blocked_until(NOW) is None
    assert main.blocked_until(NOW) is None
    # the learned speed is the ISP's; the warm pool's rule caps it
    assert (warm.speed(), main.speed()) == (3.0, 600.0)
    paused = IspState(isp="gmail", pool="main", paused=True)
    main.brain_state(paused, NOW)
    assert main.blocked_until(NOW) == float("inf") and main.isp_blocked_until(NOW) is None


def test_a_pool_lock_reply_locks_the_lane_at_once() -> None:
    warm = _lane("warm", ["127.0.0.2", "127.0.0.4"])
    rule = next(r for r in warm.rule.replies if r.name == "warm_block")
    assert warm.note_lock_reply(rule, "127.0.0.2", NOW)
    # every source IP of the pool stops, not only the one that got the reply
    assert warm.blocked_until(NOW) == NOW + 3600
    # the brain's pool record confirms it; a whole-ISP record does not touch it
    warm.brain_state(IspState(isp="gmail", updated_at=NOW + 1), NOW + 1)
    assert warm.blocked_until(NOW + 1) == NOW + 3600
    warm.brain_state(IspState(isp="gmail", pool="warm", locked_until=NOW + 3600,
                              updated_at=NOW + 1), NOW + 1)
    assert warm.local_locks == {} and warm.blocked_until(NOW + 2) == NOW + 3600



def test_rules_with_a_live_edit_are_merged_once_per_edit() -> None:
    # the brain and the senders ask for them at every delivery event
    live = {"speed": {"max": 50}, "pools": {"warm": {"speed": {"max": 2}}}}
    first = KB.effective("gmail", live, "warm")
    assert KB.effective("gmail", {"pools": {"warm": {"speed": {"max": 2}}}, "speed": {"max": 50}},
                        "warm") is first
    other = KB.effective("gmail", {"speed": {"max": 50}, "pools": {"warm": {"speed": {"max": 1}}}},
                         "warm")
    assert (first.speed.max, other.speed.max) == (2, 1)
    assert KB.effective("gmail", live).speed.max == 50
