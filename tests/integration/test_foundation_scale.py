"""Scale: 10,000 messages to five providers through two sender nodes in one consumer group.

What must hold at that volume: every id ends with exactly one final event, each delivered id
reached the simulated providers exactly once (the ``X-Kmta-Id`` header the sims log), and the
work was shared by both nodes.
"""
from __future__ import annotations

import time
from collections import Counter

from tests.harness import messages, wait_for

N = 10_000
DOMAINS = ["gmail.com", "googlemail.com", "yahoo.com", "aol.com", "outlook.com", "hotmail.com",
           "mail.ru", "bk.ru", "shop-example.test", "news-example.test"]


def test_ten_thousand_messages_two_senders(pipeline_factory) -> None:
    p = pipeline_factory()
    p.start(senders=2)
    t0 = time.monotonic()
    ids = p.produce(messages(N, DOMAINS, prefix="scale"))
    produced = time.monotonic() - t0
    finals = p.wait_finals(ids, timeout=150)
    elapsed = time.monotonic() - t0
    print(f"\nscale: produced {N} in {produced:.1f}s, all final after {elapsed:.1f}s "
          f"({N / elapsed:.0f} msg/s end to end)")

    statuses = Counter(f["status"] for f in finals.values())
    assert statuses == {"delivered": N}, statuses
    events = p.results()
    finals_per_id = Counter(e["id"] for e in events if e["final"])
    assert len(finals_per_id) == N
    assert set(finals_per_id.values()) == {1}, Counter(finals_per_id.values())

    isps = Counter(f["isp"] for f in finals.values())
    assert {"gmail", "yahoo", "outlook", "mailru"} <= isps.keys(), isps
    assert all(isps[i] == N // 5 for i in ("gmail", "yahoo", "outlook", "mailru")), isps

    nodes = Counter(f["node"] for f in finals.values())
    assert set(nodes) == {"sender-1", "sender-2"}, nodes
    assert min(nodes.values()) > 0, nodes

    # what the providers saw: each delivered id exactly once (the sim log flushes within 0.1 s)
    wanted = set(ids)

    def accepted() -> Counter | None:
        c = Counter(e.get("kmta_id") for e in p.sim_events() if e["event"] == "accepted")
        return c if wanted <= c.keys() else None

    seen = wait_for(accepted, 15, "every id in the sim log")
    dupes = {i: n for i, n in seen.items() if n != 1}
    assert not dupes, f"{len(dupes)} ids accepted more than once, e.g. {list(dupes.items())[:5]}"
    assert seen.keys() == wanted
