"""A partition handed over in a rebalance while some of its messages are still being delivered
past the revoke's grace (replies slower than ``REVOKE_GRACE``): the old owner commits the
partition without them and gives it up, and the next owner (the other node, or the same one
again) delivers them again. The old delivery's late outcome must not be written as well:
exactly one final event per id, whoever the partition goes to."""
from __future__ import annotations

import time
from collections import Counter

from senders.intake import REVOKE_GRACE
from tests.harness import generic_scenario, messages, wait_for

SLOW = REVOKE_GRACE + 20  # seconds the provider takes to answer a "slow" recipient's DATA
DOMAIN = "slow-example.test"
SCENARIO = (generic_scenario(("slowprov", "127.0.1.10", [DOMAIN]))
            + f"[provider.behaviour]\nslow_seconds = {SLOW}\n")


def test_a_late_outcome_of_a_partition_given_away_is_not_written(pipeline_factory) -> None:
    p = pipeline_factory(scenario=SCENARIO)
    p.start(senders=1)
    docs = messages(60, [DOMAIN], prefix="handover")
    for d in docs[::10]:
        d["to"] = "slow" + d["to"]
    slow = {d["to"] for d in docs[::10]}
    ids = p.produce(docs)

    def slow_in_flight() -> bool:
        return slow <= {e["recipient"] for e in p.sim_events() if e["event"] == "rcpt"}
    wait_for(slow_in_flight, 60, "every slow message at the provider")
    started = time.monotonic()
    p.start_sender("sender-2")  # a rebalance while their replies are outstanding
    finals = p.wait_finals(ids, timeout=2 * SLOW + 60)
    assert Counter(f["status"] for f in finals.values()) == {"delivered": len(ids)}

    def accepted() -> Counter:
        return Counter(e.get("kmta_id") for e in p.sim_events() if e["event"] == "accepted")
    # the next owner delivered them again (the late replies were not in the last commit)
    slow_ids = {f["id"] for f in finals.values() if f["to"] in slow}
    wait_for(lambda: all(accepted()[i] == 2 for i in slow_ids), 2 * SLOW + 30,
             "the slow messages delivered again by the partition's next owner")
    # one more message on that partition, after those outcomes: once it is final, the
    # transactions that would hold a second outcome of theirs are committed
    [marker] = p.produce(messages(1, [DOMAIN], prefix="marker"))
    p.wait_finals([marker], 60)
    per_id = Counter(e["id"] for e in p.results() if e["final"])
    twice = sorted(i for i, n in per_id.items() if n > 1)
    print(f"\nhandover with {len(slow)} replies {SLOW:.0f} s late (grace {REVOKE_GRACE:.0f} s):"
          f" {len(slow_ids)} delivered again by the next owner, {len(twice)} ids with two final"
          f" events, {time.monotonic() - started:.0f} s after the second sender started")
    assert twice == []
