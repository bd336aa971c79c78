"""Crashes lose nothing: a sender killed with SIGKILL mid-run, and a worker restarted mid-stream.

Every id still ends with a final event, delivered. A sender writes outcomes and commits queue
offsets in one Kafka transaction, and readers of the results read committed records only, so
what a dead sender had not committed is delivered by the next owner of its partitions and its
outcome is the only one seen: exactly one final event per id. The SMTP side may see such a
message twice (it was accepted, then the sender died before its transaction committed).
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter

from kmta.client import ResultCollector
from tests.harness import Pipeline, messages, wait_for

DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "mail.ru", "shop-example.test"]


def wait_progress(p: Pipeline, n: int, node: str | None = None, timeout: float = 60) -> int:
    """Until ``n`` delivered events (by ``node``) are on the results topic; returns how many
    ids were routed (have a queued event) by then."""

    async def go() -> int:
        col = ResultCollector(p.config)
        await col.start(from_beginning=True)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                await col.poll(200)
                done = sum(1 for evs in col.events.values() for e in evs
                           if e["status"] == "delivered" and node in (None, e.get("node")))
                if done >= n:
                    return sum(1 for evs in col.events.values()
                               if any(e["status"] == "queued" for e in evs))
            raise AssertionError(f"fewer than {n} deliveries after {timeout}s")
        finally:
            await col.stop()

    return asyncio.run(go())


def check_outcome(p: Pipeline, ids: list[str], timeout: float = 150) -> tuple[int, int]:
    """Nothing lost: every id has a final event, all delivered. Returns (ids with more than one
    final event, ids accepted more than once at the SMTP side); both are checked consistent."""
    finals = p.wait_finals(ids, timeout=timeout)
    assert Counter(f["status"] for f in finals.values()) == {"delivered": len(ids)}
    events = p.results()
    finals_per_id = Counter(e["id"] for e in events if e["final"])
    assert set(finals_per_id) == set(ids)
    twice_final = {i for i, n in finals_per_id.items() if n > 1}
    wanted = set(ids)
    seen = wait_for(lambda: c if wanted <= (c := Counter(
        e.get("kmta_id") for e in p.sim_events() if e["event"] == "accepted")).keys() else None,
        15, "every id at the sims")
    twice_smtp = {i for i, n in seen.items() if n > 1 and i in wanted}
    # a second final event only ever for a message that really was delivered a second time
    assert twice_final <= twice_smtp, twice_final - twice_smtp
    return len(twice_final), len(twice_smtp)


def out_of_order(n: int, prefix: str) -> list[dict]:
    """Messages of which one in 20 is answered 5 s late ("slow" recipients): the others of
    its partition finish past it, so at any moment outcomes are committed beyond the commit
    point, which a partition's next owner must not repeat."""
    docs = messages(n, DOMAINS, prefix=prefix)
    for i in range(0, n, 20):
        docs[i]["to"] = "slow" + docs[i]["to"]
    return docs


def test_sender_killed_mid_run_loses_nothing(pipeline_factory) -> None:
    p = pipeline_factory()
    p.start(senders=2)
    ids = p.produce(out_of_order(5000, "crash"))
    wait_progress(p, 300, node="sender-1")
    p.kill("sender-1")
    killed_at = time.time()
    p.start_sender("sender-3")
    twice_final, twice_smtp = check_outcome(p, ids)
    events = p.results()
    by_node = Counter(e.get("node") for e in events if e["status"] == "delivered")
    late = sum(1 for e in events if e.get("node") == "sender-1" and e["timestamp"] > killed_at)
    print(f"\nsender crash: deliveries by node {dict(by_node)}; {twice_smtp} ids delivered "
          f"twice at the SMTP side, {twice_final} with two final events")
    assert late == 0
    # the killed node had delivered, and the survivors (whichever the group gave its
    # partitions to) finished its share
    assert by_node["sender-1"] > 0 and by_node["sender-2"] + by_node["sender-3"] > 0
    # only what was in flight (at most 5 lanes x 2 source IPs x 8 connections) or accepted
    # but not yet in a committed transaction (about one transaction of one node's deliveries)
    assert twice_smtp <= 200, twice_smtp
    assert twice_final == 0, f"{twice_final} ids got a second final event"


def test_worker_restarts_mid_stream_lose_nothing(pipeline_factory) -> None:
    """The worker stopped (SIGTERM) and, later, killed (SIGKILL) while routing a burst (and
    moving retries): nothing is lost, and nothing is routed, delivered or reported twice."""
    p = pipeline_factory()
    p.start(senders=1)
    ids = p.produce(messages(4000, DOMAINS, prefix="wcrash"))
    routed = [wait_progress(p, 300)]
    p.stop("worker")
    # it closed its own Kafka clients (route loop, delay scheduler, views): left their groups
    assert "Unclosed AIOKafka" not in p.log("worker")
    p.start_worker("worker")
    routed.append(wait_progress(p, 1500))
    # a SIGTERM'd worker finishes and commits the batch it was routing: none routed twice
    queued = Counter(e["id"] for e in p.results() if e["status"] == "queued")
    assert sum(1 for n in queued.values() if n > 1) == 0
    # kill -9 while a second burst is being routed (and retries wait in the delay topics)
    burst = messages(2000, DOMAINS, prefix="wburst")
    for d in burst[::40]:
        d["to"] = "tempfail" + d["to"]
    burst_ids = p.produce(burst)
    wait_for(lambda: routed_of(p, burst_ids) >= 100, 60, "the burst being routed")
    p.kill("worker")
    killed_at = time.monotonic()
    at_kill = routed_of(p, burst_ids)
    p.start_worker("worker")
    wait_for(lambda: routed_of(p, burst_ids) > at_kill, 90, "routing to resume", interval=0.5)
    recovered = time.monotonic() - killed_at
    ids += burst_ids
    twice_final, twice_smtp = check_outcome(p, ids)
    done = time.monotonic() - killed_at
    queued = Counter(e["id"] for e in p.results() if e["status"] == "queued")
    rerouted = sum(1 for n in queued.values() if n > 1)
    print(f"\nworker restarts after {routed} of the first {len(ids) - len(burst_ids)} were "
          f"routed; kill -9 with {at_kill} of a {len(burst_ids)} burst routed: routing resumed "
          f"{recovered:.1f} s after the kill, all {len(ids)} final after {done:.1f} s; 0 lost, "
          f"{rerouted} ids routed twice, {twice_smtp} delivered twice at the SMTP side, "
          f"{twice_final} with two final events")
    # a batch is routed in one transaction with its outbox offsets: what the killed worker
    # routed and had not committed was aborted, and the next routing of it is the only one
    assert (rerouted, twice_smtp, twice_final) == (0, 0, 0)
    assert routed[0] < len(ids), "routing was over before the first restart: not mid-stream"
    assert at_kill < len(burst_ids), "routing was over before the kill: not mid-run"


def routed_of(p: Pipeline, ids: list[str]) -> int:
    """How many of ``ids`` have a queued event (were routed)."""
    want = set(ids)
    return len({e["id"] for e in p.results() if e["status"] == "queued" and e["id"] in want})
