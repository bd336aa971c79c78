"""A live rule edit on the control topic (``set_rules``) reaches every sender node within
seconds: both nodes sharing an ISP report the lower speed, and the provider sees the lower
speed and the lower connection cap at once."""
from __future__ import annotations

import time
from collections import defaultdict

from tests.harness import messages, wait_for

ISP = "gmail"  # two queue partitions in the shipped rules: one per sender node
SPEED = 10.0  # messages per tact (1 s in the test rules) per source IP, all nodes together
CONNECTIONS = 2  # per source IP, all nodes together (one per partition)


def node_loads(p, after: float = 0.0) -> dict[str, dict]:
    """The latest stats of each node for the ISP, published after ``after``."""
    latest: dict[str, dict] = {}
    for st in p.read_topic("nodes"):
        if st["timestamp"] >= after and ISP in st["isps"] and not st.get("stopping"):
            latest[st["node"]] = st["isps"][ISP]
    return latest


def concurrency(events: list[dict], ip: str, start: float, end: float) -> int:
    """Most connections the provider had open at once from ``ip`` within [start, end]."""
    open_, most = 0, 0
    for e in sorted(events, key=lambda e: e["time"]):
        if e["provider"] != ISP or e["ip"] != ip or e["event"] not in ("connect", "quit"):
            continue
        open_ += 1 if e["event"] == "connect" else -1
        if start <= e["time"] <= end:
            most = max(most, open_)
    return most


def test_set_rules_reaches_every_sender_within_seconds(pipeline_factory) -> None:
    p = pipeline_factory()
    p.start(senders=2)
    warm = p.produce(messages(60, ["gmail.com"], prefix="warm"))
    assert {f["status"] for f in p.wait_finals(warm, 60).values()} == {"delivered"}
    # both nodes deliver for the ISP (one partition each) at the fast test speed
    before = wait_for(lambda: n if len(n := node_loads(p)) == 2 else None, 30,
                      "both sender nodes reporting the ISP")
    assert all(load["rate"] > 100 * SPEED for load in before.values()), before

    edited = time.time()
    p.control("set_rules", ISP, rules={"speed": {"max": SPEED},
                                       "sending": {"max_connections": CONNECTIONS}})
    # every node's heartbeat (every 2 s) shows the new speed: its share of it, for 2 source IPs
    after = wait_for(lambda: n if len(n := node_loads(p, after=edited)) == 2 and all(
        x["rate"] <= SPEED for x in n.values()) else None, 10, "both nodes at the new speed")
    assert all(x["rate"] == SPEED * 0.5 * 2 for x in after.values()), after
    reached = max(st["timestamp"] for st in p.read_topic("nodes") if st["timestamp"] >= edited
                  and ISP in st["isps"] and st["isps"][ISP]["rate"] <= SPEED)
    assert reached - edited < 5.0

    # what the provider sees from now on: at most SPEED per second per source IP, in at most
    # CONNECTIONS connections per source IP (both nodes together)
    sent = time.time()
    ids = p.produce(messages(160, ["gmail.com"], prefix="paced"))
    finals = p.wait_finals(ids, 60)
    assert {f["status"] for f in finals.values()} == {"delivered"}
    arrived = wait_for(lambda: a if len(a := [e for e in p.sim_events() if e.get(
        "kmta_id") in set(ids) and e["event"] == "accepted"]) == len(ids) else None, 10,
        "the sim log")
    per_ip: dict[str, list[float]] = defaultdict(list)
    for e in arrived:
        per_ip[e["ip"]].append(e["time"])
    assert set(per_ip) == {"127.0.0.2", "127.0.0.3"}
    events = p.sim_events()
    for ip, times in per_ip.items():
        times.sort()
        # any 2-second window holds at most 2 x SPEED (+2: a banked slot on each node)
        worst = max(sum(1 for t in times if s <= t < s + 2.0) for s in times)
        assert worst <= 2 * SPEED + 2, (ip, worst)
        assert concurrency(events, ip, sent, times[-1]) <= CONNECTIONS
    spread = max(t for ts in per_ip.values() for t in ts) - min(
        t for ts in per_ip.values() for t in ts)
    assert spread >= len(ids) / (2 * SPEED) * 0.8  # paced, not merely capped
