"""Locks on the real pipeline: a reply that matches a lock rule stops every connection to the
ISP until the lock ends (judged by the provider's own log of connections), sending resumes by
itself afterwards, and an operator's unlock ends a lock early."""
from __future__ import annotations

import time

from tests.harness import FAST_RULES, generic_scenario, held_at_sender, messages, wait_for

SCENARIO = generic_scenario(("lockprov", "127.0.1.10", ["shop-example.test"]))

ISP = "lockisp"
DOMAIN = "shop-example.test"
# the sim's generic "reject..." recipients get: 554 5.7.1 Message rejected for policy reasons
LOCK_REPLY = "rejected for policy reasons"


def rules(duration: str) -> dict:
    isp = {
        "domains": [DOMAIN], "partitions": 1,
        "sending": dict(FAST_RULES["default"]["sending"]),
        "speed": dict(FAST_RULES["default"]["speed"]),
        # the lock trigger itself ends after one attempt; held messages are not retries
        "retry": {"mode": "fixed", "interval": "1s", "max_attempts": 1, "max_age": "1h"},
        "replies": [{"name": "test_policy_lock", "match": LOCK_REPLY, "action": "lock",
                     "duration": duration, "category": "policy"}],
    }
    return {"default": FAST_RULES["default"], "isp": {ISP: isp}}


def lock_state(p, after: float = 0.0) -> dict | None:
    """The newest whole-ISP state that carries our lock, published after ``after``."""
    found = [s for s in p.read_topic("state") if s.get("isp") == ISP and not s.get("source_ip")
             and s.get("lock_reason") == "test_policy_lock" and s["updated_at"] >= after]
    return found[-1] if found else None


def connects(p, start: float, end: float) -> list[float]:
    return [e["time"] for e in p.sim_events()
            if e["provider"] == "lockprov" and e["event"] == "connect" and start < e["time"] < end]


def accepted_times(p, ids: set[str]) -> dict[str, float]:
    return {e["kmta_id"]: e["time"] for e in p.sim_events()
            if e["event"] == "accepted" and e.get("kmta_id") in ids}


def start_locked(p, held: int) -> tuple[float, dict, list[str]]:
    """Warm the lane up, trigger the lock, queue ``held`` messages behind it. Returns the
    moment the lock began (the trigger's result), the lock state and the held ids."""
    warm = p.produce(messages(5, [DOMAIN], prefix="warm"))
    assert {f["status"] for f in p.wait_finals(warm, 60).values()} == {"delivered"}
    trigger = p.produce(messages(1, [DOMAIN], prefix="reject"))
    final = p.wait_finals(trigger, 30)[trigger[0]]
    assert final["status"] == "expired" and final["code"] == 554, final
    began = final["timestamp"]
    st = wait_for(lambda: lock_state(p), 30, "the brain's lock on the state topic")
    held_ids = p.produce(messages(held, [DOMAIN], prefix="held"))
    return began, st, held_ids


def test_lock_stops_connections_and_ends_by_itself(pipeline_factory) -> None:
    p = pipeline_factory(scenario=SCENARIO, rules=rules("10s"))
    p.start(senders=1)
    began, st, held = start_locked(p, 20)
    until = st["locked_until"]
    assert 9.0 <= until - began <= 11.0, (began, until)
    finals = p.wait_finals(held, 60)
    assert {f["status"] for f in finals.values()} == {"delivered"}
    # what the provider saw: not one connection attempt while the lock held
    assert connects(p, began, until) == []
    # ... and sending resumed by itself once it ended: every held message arrived after it
    arrived = wait_for(lambda: a if len(a := accepted_times(p, set(held))) == len(held) else None,
                       10, "the sim log")
    assert min(arrived.values()) >= until
    assert min(connects(p, until, time.time() + 1)) - until < 3.0
    assert max(f["attempt"] for f in finals.values()) == 1  # held, not retried


def test_operator_unlock_ends_the_lock_early(pipeline_factory) -> None:
    p = pipeline_factory(scenario=SCENARIO, rules=rules("10m"))
    p.start(senders=1)
    began, st, held = start_locked(p, 10)
    until = st["locked_until"]
    assert until - began >= 590
    # the held messages were queued and wait at the sender (in its lane, or behind the
    # partition the blocked lane paused), the ISP shown paused
    wait_for(lambda: held_at_sender(p, ISP, held), 30, "the held messages at the sender")
    assert connects(p, began, time.time()) == []
    assert not accepted_times(p, set(held))
    unlocked_at = time.time()
    p.control("unlock", ISP)
    finals = p.wait_finals(held, 30)
    assert {f["status"] for f in finals.values()} == {"delivered"}
    arrived = wait_for(lambda: a if len(a := accepted_times(p, set(held))) == len(held) else None,
                       10, "the sim log")
    assert unlocked_at <= min(arrived.values()) < unlocked_at + 10
    assert connects(p, began, unlocked_at) == []
    # the brain published the end of the lock
    states = [s for s in p.read_topic("state") if s.get("isp") == ISP
              and not s.get("source_ip") and s["updated_at"] >= unlocked_at]
    assert states and states[-1].get("locked_until") is None
