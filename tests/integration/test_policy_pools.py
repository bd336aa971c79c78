"""Rules narrowed per source-IP pool, on the real pipeline against isp-sim.

Two pools send to the simulated gmail: ``warm`` (127.0.0.2) and ``main`` (127.0.0.3). Only the
warm pool has a speed cap and a pool-scope lock rule. The sim's log says which source IP made
each connection and delivered each message, so the test sees what each pool really did."""
from __future__ import annotations

import copy
import time

from tests.harness import FAST_RULES, messages, wait_for
from tests.integration.test_control_cli import kmta

LOCK_SECONDS = 20
WARM_RATE = 4.0  # messages per second (tact 1 s) for the warm pool
WARM, MAIN = "127.0.0.2", "127.0.0.3"


def _rules() -> dict:
    rules = copy.deepcopy(FAST_RULES)
    rules["isp"]["gmail"]["pools"] = {"warm": {
        "speed": {"max": WARM_RATE},
        # one attempt only: the probe below ends `expired` instead of locking again at retry
        "retry": {"mode": "fixed", "interval": "2s", "max_attempts": 1, "max_age": "1h"},
        # the sim answers local parts "unknown*" with 550 5.1.1; for this pool only, that
        # reply locks the pool (as a block notice of a provider would)
        "replies": [{"name": "warm_probe", "match": r"^550 5\.1\.1", "action": "lock",
                     "duration": f"{LOCK_SECONDS}s", "scope": "pool", "source": "test"}],
    }}
    return rules


def test_pool_lock_and_pool_speed_cap(pipeline_factory) -> None:
    p = pipeline_factory(rules=_rules(), pools=[{"name": "warm", "source_ips": [WARM]},
                                                {"name": "main", "source_ips": [MAIN]}])
    p.start(senders=1)

    # 1. one such reply through the warm pool locks the warm pool, and nothing else; a lock
    # reply is temporary for the message, and the warm pool's own retry rule expires it
    probe = p.produce([{"from": "s@kmta.test", "to": "unknown1@gmail.com", "subject": "p",
                        "text": "p", "pool": "warm"}])
    assert p.wait_finals(probe, 60)[probe[0]]["status"] == "expired"
    state = wait_for(lambda: next((s for s in p.read_topic("state")
                                   if s.get("isp") == "gmail" and s.get("pool") == "warm"
                                   and s.get("locked_until")), None), 30, "the pool lock")
    locked_until = state["locked_until"]
    assert state["lock_reason"] == "warm_probe"
    assert not any(s.get("locked_until") for s in p.read_topic("state")
                   if s.get("isp") == "gmail" and not s.get("pool"))

    # 2. during the lock: the main pool delivers at once, the warm pool makes no connection
    sent_at = time.time()
    main_ids = p.produce(messages(40, ["gmail.com"], prefix="m", pool="main"))
    warm_ids = p.produce(messages(20, ["gmail.com"], prefix="w", pool="warm"))
    main_finals = p.wait_finals(main_ids, 60)
    assert {f["status"] for f in main_finals.values()} == {"delivered"}
    assert {f["source_ip"] for f in main_finals.values()} == {MAIN}
    assert max(f["timestamp"] for f in main_finals.values()) < locked_until, (
        "the main pool waited for the warm pool's lock")

    warm_finals = p.wait_finals(warm_ids, LOCK_SECONDS + 90)
    assert {f["status"] for f in warm_finals.values()} == {"delivered"}
    assert {f["source_ip"] for f in warm_finals.values()} == {WARM}
    wait_for(lambda: time.time() > max(f["timestamp"] for f in warm_finals.values()) + 0.5,
             5, "the sim log flush")
    events = p.sim_events()
    warm_connects = [e["time"] for e in events if e["event"] == "connect" and e["ip"] == WARM
                     and e["time"] >= sent_at]
    assert warm_connects, "the warm pool sent again after its lock"
    assert min(warm_connects) >= locked_until - 0.5, (
        f"warm pool connected {locked_until - min(warm_connects):.1f}s before its lock ended")

    # 3. the warm pool's cap: its 20 messages spread at about WARM_RATE a second
    accepted = sorted(e["time"] for e in events if e["event"] == "accepted"
                      and e.get("kmta_id") in set(warm_ids))
    assert len(accepted) == 20
    rate = (len(accepted) - 1) / (accepted[-1] - accepted[0])
    assert rate <= WARM_RATE * 1.3, f"warm pool sent {rate:.1f}/s over its cap {WARM_RATE}/s"


def test_operator_pauses_one_pool_from_the_cli(pipeline_factory) -> None:
    p = pipeline_factory(pools=[{"name": "warm", "source_ips": [WARM]},
                                {"name": "main", "source_ips": [MAIN]}])
    p.start(senders=1)
    typo = kmta(p, "pause", "gmail", "--pool", "mian")
    assert typo.returncode != 0 and "unknown pool 'mian'" in typo.stderr

    done = kmta(p, "pause", "gmail", "--pool", "main", "--reason", "test")
    assert done.returncode == 0 and "applied pause gmail (pool main)" in done.stdout, done
    paused_at = time.time()
    main_ids = p.produce(messages(10, ["gmail.com"], prefix="m", pool="main"))
    warm_ids = p.produce(messages(10, ["gmail.com"], prefix="w", pool="warm"))
    warm_finals = p.wait_finals(warm_ids, 60)
    assert {f["status"] for f in warm_finals.values()} == {"delivered"}
    # the warm pool went while the main pool's messages waited, without a connection
    time.sleep(2.0)
    assert not [e for e in p.results() if e["id"] in set(main_ids) and e["final"]]
    assert not [e for e in p.sim_events() if e["event"] == "connect" and e["ip"] == MAIN
                and e["time"] >= paused_at]

    assert kmta(p, "resume", "gmail", "--pool", "main").returncode == 0
    main_finals = p.wait_finals(main_ids, 90)
    assert {f["status"] for f in main_finals.values()} == {"delivered"}
    assert {f["source_ip"] for f in main_finals.values()} == {MAIN}
