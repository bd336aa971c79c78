"""Scaling the senders' consumer group under load, as KEDA does it (deploy/k8s): a node added
while two paced ISPs are being delivered, then the first node stopped (SIGTERM, as Kubernetes
stops a pod). Nothing is lost or repeated, and the ISPs' limits hold throughout: each node paces
its share of an ISP (owned partitions / the ISP's partitions), and that share follows every
rebalance. test_foundation_crash.py has the kill -9 case.
"""
from __future__ import annotations

import copy
import time
from collections import Counter, defaultdict

from tests.harness import FAST_RULES, messages
from tests.integration.test_foundation_crash import check_outcome, wait_progress

RATE = 10.0  # messages per second per source IP (tact 1 s), for each paced ISP
IPS = ["127.0.0.2", "127.0.0.3"]  # the default pool of the test deployment
PACED = {"gmail": "gmail.com", "yahoo": "yahoo.com"}
N = 500  # per ISP: 25 s at 2 x RATE
WINDOW = 3.0  # seconds: the sliding window the limit is checked over
SLACK = 1.2  # a late pacer slot may be backdated a quarter interval; arrival jitter


def paced_rules() -> dict:
    rules = copy.deepcopy(FAST_RULES)
    for isp in PACED:
        rules["isp"][isp] = {**rules["isp"][isp],
                             "sending": {"tact": "1s", "max_connections": 4,
                                         "messages_per_connection": 500},
                             "speed": {"min": RATE, "max": RATE, "start": RATE}}
    return rules


def most_in_window(times: list[float], width: float) -> int:
    """The most events within any ``width`` seconds."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_sender_added_and_removed_under_load(pipeline_factory) -> None:
    p = pipeline_factory(rules=paced_rules())
    p.start(senders=1)
    docs = [d for isp, domain in PACED.items() for d in messages(N, [domain], prefix=isp)]
    ids = p.produce(docs)

    # deadlines, not speed limits: a shared machine may run this slowly
    wait_progress(p, 150, timeout=240)
    p.start_sender("sender-2")  # scale up: the group gives it part of the partitions
    added_at = time.time()
    wait_progress(p, 150, node="sender-2", timeout=240)
    p.stop("sender-1")  # scale down: SIGTERM; it finishes its in-flight work and leaves
    stopped_at = time.time()
    twice_final, twice_smtp = check_outcome(p, ids, timeout=300)

    # nothing lost (check_outcome) and, the rebalances being orderly, nothing repeated
    assert (twice_final, twice_smtp) == (0, 0)
    events = p.results()
    delivered = [e for e in events if e["status"] == "delivered"]
    by_node = Counter((e["node"], e["isp"]) for e in delivered)
    late = [e for e in delivered if e["node"] == "sender-1" and e["timestamp"] > stopped_at]
    assert not late, f"{len(late)} deliveries by sender-1 after it stopped"
    assert all(by_node["sender-2", isp] > 0 for isp in PACED), by_node
    assert sum(by_node[n, isp] for n in ("sender-1", "sender-2") for isp in PACED) == 2 * N

    # what each node allowed itself, from its heartbeats: RATE x its share x its source IPs
    pmap = {isp: set(parts) for isp, parts in partition_sets(p).items()}
    shares: dict[tuple[str, str], set[float]] = defaultdict(set)
    for hb in p.read_topic("nodes"):
        for isp, parts in pmap.items():
            load = hb["isps"].get(isp)
            if load is None:
                continue
            owned = len(parts & set(hb["partitions"]))
            if owned == 0:  # a lane left without partitions holds nothing of the ISP
                assert load["backlog"] == load["in_flight"] == 0, (hb["node"], isp, load)
                continue
            share = owned / len(parts)
            assert abs(load["rate"] - RATE * share * len(IPS)) < 0.01, (hb["node"], isp, load)
            shares[hb["node"], isp].add(share)
    # each ISP was split between both nodes once sender-2 came, and whole again when it was
    # alone (the ISPs have two partitions each; the group's round robin splits them)
    for isp in PACED:
        assert shares["sender-1", isp] >= {1.0, 0.5}, shares
        assert shares["sender-2", isp] >= {0.5, 1.0}, shares

    # what the providers saw: per source IP, never more than RATE in any window
    sim = [e for e in p.sim_events() if e["event"] == "accepted" and e.get("kmta_id")]
    isp_of = {e["id"]: e["isp"] for e in delivered}
    peaks = {}
    for isp in PACED:
        for ip in IPS:
            times = [e["time"] for e in sim if isp_of.get(e["kmta_id"]) == isp
                     and e["ip"] == ip]
            peak = peaks[isp, ip] = most_in_window(times, WINDOW)
            assert peak <= RATE * WINDOW * SLACK, f"{isp} via {ip}: {peak} in {WINDOW:g} s"
    span = {isp: max(e["timestamp"] for e in delivered if e["isp"] == isp)
            - min(e["timestamp"] for e in delivered if e["isp"] == isp) for isp in PACED}
    print(f"\nscale: sender-2 added {added_at - min(e['timestamp'] for e in delivered):.1f} s "
          f"in, sender-1 stopped {stopped_at - added_at:.1f} s later; deliveries "
          f"{dict(by_node)}; {N} per ISP in {', '.join(f'{k} {v:.1f} s' for k, v in span.items())}"
          f" (limit {RATE * len(IPS):g}/s: {N / (RATE * len(IPS)):.0f} s at best); most in "
          f"{WINDOW:g} s per ISP and IP {sorted(peaks.values())} (limit {RATE * WINDOW:g}); "
          f"shares seen {dict(shares)}")


def partition_sets(p) -> dict[str, list[int]]:
    from kmta.pipeline.rules import load_kb, partition_map

    kb = load_kb(p.config)
    pm = partition_map(p.config, kb)
    return {isp: pm.partitions_of(isp) for isp in PACED}
