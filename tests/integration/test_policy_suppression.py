"""Suppression on the real pipeline: a hard bounce (550 5.1.1, unknown user) puts the address
on the suppression list, and a later message to it ends ``suppressed`` without the provider
ever seeing it again."""
from __future__ import annotations

import time

from tests.harness import wait_for

# The worker's router reads the suppression topic through a view that fetches every 0.1 s.
VIEW_CATCH_UP = 1.0


def test_hard_bounce_suppresses_later_messages(pipeline_factory) -> None:
    p = pipeline_factory()
    p.start(senders=1)
    address = "unknown42@gmail.com"
    first = p.produce([{"from": "s@kmta.test", "to": address, "subject": "1", "text": "x"}])
    bounced = p.wait_finals(first, 60)[first[0]]
    assert (bounced["status"], bounced["code"], bounced["category"]) == (
        "bounced", 550, "bad_mailbox")
    entry = wait_for(lambda: next((s for s in p.read_topic("suppression")
                                   if s.get("address") == address), None),
                     30, "the address on the suppression topic")
    assert (entry["category"], entry["reason"], entry["scope"], entry["id"]) == (
        "bad_mailbox", "hard_bounce", "global", first[0])
    assert entry["detail"] == bounced["response"][:300]
    wait_for(lambda: time.time() > entry["at"] + VIEW_CATCH_UP, 5, "the router's view")

    sent_at = time.time()
    later = p.produce([{"from": "s@kmta.test", "to": address, "subject": "2", "text": "y"}])
    final = p.wait_finals(later, 60)[later[0]]
    assert (final["status"], final["final"], final["category"]) == (
        "suppressed", True, "suppressed")
    # no sender node ever had it: the router ended it
    assert [e["status"] for e in p.results() if e["id"] == later[0]] == ["suppressed"]
    # the provider saw the address once, at the first attempt, and no connection since
    wait_for(lambda: time.time() > final["timestamp"] + 0.5, 5, "the sim log flush")
    seen = [e for e in p.sim_events() if e.get("recipient") == address]
    assert [e["event"] for e in seen] == ["rejected"]
    assert seen[0]["time"] < sent_at
    assert not [e for e in p.sim_events() if e["provider"] == "gmail"
                and e["event"] == "connect" and e["time"] >= sent_at]
