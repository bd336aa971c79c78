"""A worker killed with SIGKILL loses nothing the brain decided: faust restores the ``isp-state``
table from its changelog topic, so after a restart the ISP is still locked (no connection
until the lock's end), its learned speed is kept, and retries waiting in the delay topics
still come due."""
from __future__ import annotations

import time

from kmta.policy.speed import STARTUP_EXIT
from tests.harness import FAST_RULES, generic_scenario, held_at_sender, messages, wait_for

SCENARIO = generic_scenario(("lockprov", "127.0.1.10", ["shop-example.test"]),
                            ("retryprov", "127.0.1.11", ["news-example.test"]))

LOCK_ISP, LOCK_DOMAIN = "lockisp", "shop-example.test"
RETRY_ISP, RETRY_DOMAIN = "retryisp", "news-example.test"
LOCK_SECONDS = 45
RETRY_SECONDS = 20


def rules() -> dict:
    sending = FAST_RULES["default"]["sending"]
    return {"default": FAST_RULES["default"], "isp": {
        LOCK_ISP: {
            "domains": [LOCK_DOMAIN], "partitions": 1, "sending": sending,
            # startup from 40; the lock is its knee (STARTUP_EXIT of the speed): 30 is "learned"
            "speed": {"min": 1, "max": 1000, "start": 40},
            "retry": {"mode": "fixed", "interval": "1s", "max_attempts": 1, "max_age": "1h"},
            "replies": [{"name": "test_policy_lock", "match": "rejected for policy reasons",
                         "action": "lock", "duration": f"{LOCK_SECONDS}s"}]},
        RETRY_ISP: {
            "domains": [RETRY_DOMAIN], "partitions": 1, "sending": sending,
            "speed": FAST_RULES["default"]["speed"],
            # "tempfail..." recipients: 451 at the first attempt, accepted at the second
            "retry": {"mode": "fixed", "interval": f"{RETRY_SECONDS}s", "jitter": 0,
                      "max_attempts": 3, "max_age": "1h"}},
    }}


def whole_states(p, isp: str, after: float = 0.0) -> list[dict]:
    return [s for s in p.read_topic("state") if s.get("isp") == isp and not s.get("source_ip")
            and s["updated_at"] >= after]


def changelog_row(p, isp: str) -> dict | None:
    """The newest row of the brain's table for ``isp`` on the changelog topic (fields at their
    default are left out, streams/rows.py)."""
    rows = [r for r in p.read_topic("brain-isp-state-changelog")
            if isinstance(r, dict) and r.get("isp") == isp]
    return rows[-1] if rows else None


def test_worker_kill_keeps_locks_speeds_and_retries(pipeline_factory) -> None:
    p = pipeline_factory(scenario=SCENARIO, rules=rules())
    p.start(senders=1)
    trigger = p.produce(messages(1, [LOCK_DOMAIN], prefix="reject"))
    retried = p.produce(messages(3, [RETRY_DOMAIN], prefix="tempfail"))
    began = p.wait_finals(trigger, 60)[trigger[0]]["timestamp"]
    lock = wait_for(lambda: [s for s in whole_states(p, LOCK_ISP) if s.get("locked_until")],
                    30, "the lock on the state topic")[-1]
    until = lock["locked_until"]
    learned = lock["speed"]
    assert learned == 40 * STARTUP_EXIT  # cut by the lock (the knee): not the rule's start
    deferred = wait_for(lambda: d if len(d := [e for e in p.results() if e["id"] in retried
                                               and e["status"] == "deferred"]) == 3 else None,
                        30, "three deferred retries")
    # the brain's row reached its changelog (what a new worker restores from)
    row = wait_for(lambda: r if (r := changelog_row(p, LOCK_ISP)) and r.get("whole", {}).get(
        "locked_until") == until else None, 30, "the row on the changelog topic")
    # the learned level is the source IP's (speed.per_ip); the ISP's record, the lowest
    assert min(level["speed"] for level in row["ip_speed"].values()) == learned
    held = p.produce(messages(10, [LOCK_DOMAIN], prefix="held"))
    wait_for(lambda: held_at_sender(p, LOCK_ISP, held), 30, "held messages at the sender")

    killed_at = time.time()
    p.kill("worker")
    assert killed_at < until - 20, "the machine is too slow for this test's lock"
    p.start_worker("worker")
    # a harmless command makes the new worker publish what its table holds for the ISP; a
    # worker that had lost the row would publish no lock and the start speed
    p.control("resume", LOCK_ISP)
    after = wait_for(lambda: whole_states(p, LOCK_ISP, after=killed_at), 150,
                     "a state from the new worker")[-1]
    assert after["locked_until"] == until
    assert after["speed"] == learned
    assert after.get("lock_reason") == "test_policy_lock"

    # the lock held across the restart: not one connection until its end ...
    finals = p.wait_finals(held + retried, 120)
    assert {f["status"] for f in finals.values()} == {"delivered"}
    lock_connects = [e["time"] for e in p.sim_events()
                     if e["provider"] == "lockprov" and e["event"] == "connect"]
    assert not [t for t in lock_connects if began < t < until]
    assert min(t for t in lock_connects if t >= until) - until < 5.0
    assert all(finals[i]["timestamp"] >= until for i in held)
    # ... and the retries parked before the kill came due, at their time, after the restart
    for ev in deferred:
        final = finals[ev["id"]]
        assert final["attempt"] == 2
        assert final["timestamp"] >= ev["next_attempt_at"] - 0.05
        assert final["timestamp"] > killed_at
