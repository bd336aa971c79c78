"""IP warm-up on the real pipeline against isp-sim, where no warm IP takes the overflow and
where two sender processes share a new IP.

* A pool of only new IPs: each sends its cap and the rest of the messages wait (no loss, no
  bounce, no attempt past a cap) until a window opens.
* Two sender nodes, each owning one of gmail's two queue partitions, share a new IP: together
  they stay within its cap (each takes its share of what the brain's snapshot left)."""
from __future__ import annotations

import datetime as dt
from collections import Counter

from tests.harness import messages, wait_for

WARM, NEW, NEW2 = "127.0.0.2", "127.0.0.3", "127.0.0.4"
CAP = 5


def _counted(p, ips: tuple[str, ...], want: int) -> dict[str, dict] | None:
    """The brain's last published warm-up snapshot per IP, once each counted ``want``."""
    last: dict[str, dict] = {}
    for s in p.read_topic("state"):
        if s.get("isp") == "gmail" and s.get("source_ip") in ips and s.get("warmup"):
            last[s["source_ip"]] = s["warmup"]
    ok = all(ip in last and last[ip]["sent_today"] == want for ip in ips)
    return last if ok else None


def test_a_pool_of_only_new_ips_sends_their_caps_and_the_rest_waits(pipeline_factory) -> None:
    today = dt.datetime.now(dt.UTC).date()
    p = pipeline_factory(
        pools=[{"name": "default", "source_ips": [NEW, NEW2],
                "warmup": {NEW: today, NEW2: today}}],
        extra={"warmup": {"schedules": {"gmail": {"daily": [CAP, 2 * CAP], "hourly": 1.0}}}})
    p.start(senders=1)
    ids = p.produce(messages(20, ["gmail.com"], prefix="n"))
    delivered = wait_for(lambda: (lambda f: f if len(f) >= 2 * CAP else None)(
        {i: f for i, f in p.finals().items() if i in set(ids)}), 120, "the caps delivered")
    wait_for(lambda: _counted(p, (NEW, NEW2), CAP), 30, "the brain's counts of both IPs")
    finals = {i: f for i, f in p.finals().items() if i in set(ids)}
    assert finals.keys() == delivered.keys()  # nothing more became final ...
    assert {f["status"] for f in finals.values()} == {"delivered"}  # ... and none was lost
    assert Counter(f["source_ip"] for f in finals.values()) == {NEW: CAP, NEW2: CAP}
    attempts = Counter(e.get("source_ip") for e in p.results()
                       if e.get("code") and e.get("id") in set(ids))
    assert attempts == {NEW: CAP, NEW2: CAP}  # no attempt past a cap
    # the other messages wait (held or parked), none given up
    assert not any(e.get("status") in ("expired", "bounced", "rejected") for e in p.results())


def test_two_sender_nodes_sharing_a_new_ip_stay_within_its_cap(pipeline_factory) -> None:
    today = dt.datetime.now(dt.UTC).date()
    cap = 10
    p = pipeline_factory(
        pools=[{"name": "default", "source_ips": [WARM, NEW], "warmup": {NEW: today}}],
        extra={"warmup": {"schedules": {"gmail": {"daily": [cap, 2 * cap], "hourly": 1.0}}}})
    p.start(senders=2)
    ids = p.produce(messages(120, ["gmail.com"], prefix="m"))
    finals = p.wait_finals(ids, 180)
    assert len(finals) == 120 and {f["status"] for f in finals.values()} == {"delivered"}
    nodes = Counter(f.get("node") for f in finals.values())
    assert len(nodes) == 2, nodes  # both nodes sent gmail's messages (one partition each)
    attempts = [e for e in p.results() if e.get("source_ip") == NEW and e.get("code")]
    assert len(attempts) <= cap  # together, never past the cap
    assert len(attempts) >= cap - 2  # each node's share rounds down by at most one
