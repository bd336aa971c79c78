"""Faults with real processes: brokers killed and restarted under load, a provider that accepts
TCP and never answers. Each test prints what it measured (lost, second final events, time to
recover). The sender and worker kill -9 tests are in test_foundation_crash.py."""
from __future__ import annotations

import asyncio
import time

import pytest

from kmta.pipeline.kafkaio import client_options
from tests.harness import FAST_RULES, held_on_sender, messages, wait_for
from tests.integration.test_foundation_crash import DOMAINS, check_outcome, wait_progress

pytestmark = pytest.mark.integration


def delivered(p) -> int:
    return sum(1 for e in p.results() if e["status"] == "delivered")


def isp_paused(p, isp: str) -> bool:
    """Every sender node that has the ISP reports it paused (latest heartbeats)."""
    latest = {st["node"]: st for st in p.read_topic("nodes")}
    loads = [n["isps"][isp] for n in latest.values() if isp in n["isps"]]
    return bool(loads) and all(x["paused"] for x in loads)


def test_only_broker_restarted_under_load(cluster_factory, pipeline_factory) -> None:
    """The only broker killed (SIGKILL) and started again while 3,000 messages flow: worker,
    senders, route loop, delay scheduler and views carry on by themselves."""
    cluster = cluster_factory(1)
    p = pipeline_factory(bootstrap=cluster.bootstrap)
    p.start(senders=2)
    docs = messages(3000, DOMAINS, prefix="bounce")
    for d in docs[::50]:  # refused once, retried through the delay topics
        d["to"] = "tempfail" + d["to"]
    ids = p.produce(docs)
    wait_progress(p, 400)
    pids = p.pids()
    before = delivered(p)
    cluster.kill(1)
    down_at = time.monotonic()
    up_after = cluster.start()
    wait_progress(p, before + 100, timeout=120)
    resumed_at = time.monotonic()
    # new records after the restart: the outbox, route loop and senders take them
    ids += p.produce(messages(300, DOMAINS, prefix="after"))
    twice_final, twice_smtp = check_outcome(p, ids, timeout=180)
    done_at = time.monotonic()
    # the views carry on: a pause (control agent -> state topic -> the senders' state view)
    # holds the ISP; a hard bounce (results agent -> suppression topic -> the route loop's
    # view) suppresses the address's next message
    p.control("pause", "outlook")
    wait_for(lambda: isp_paused(p, "outlook"), 60, "the senders to see the pause")
    held = p.produce(messages(20, ["outlook.com"], prefix="held"))
    wait_for(lambda: held_on_sender(p, "outlook") > 0, 60, "outlook held after the pause")
    [bounced] = p.produce([{"from": "s@kmta.test", "to": "unknown1@gmail.com", "subject": "x",
                            "text": "y"}])
    assert p.wait_finals([bounced], 60)[bounced]["status"] == "bounced"
    wait_for(lambda: any(s.get("address") == "unknown1@gmail.com"
                         for s in p.read_topic("suppression")), 60, "the suppression record")

    def suppressed() -> bool:  # the route loop's view takes a moment to read it
        [again] = p.produce([{"from": "s@kmta.test", "to": "unknown1@gmail.com",
                              "subject": "x", "text": "y"}])
        return p.wait_finals([again], 60)[again]["status"] == "suppressed"
    wait_for(suppressed, 30, "a message to the bounced address suppressed")
    p.control("resume", "outlook")
    assert {f["status"] for f in p.wait_finals(held, 60).values()} == {"delivered"}
    print(f"\nonly broker restarted: {before} of {len(ids)} delivered before the kill, broker down "
          f"{up_after:.1f} s; 100 more delivered {resumed_at - down_at - up_after:.1f} s after "
          f"it was back, all {len(ids)} final {done_at - down_at:.1f} s after the kill; 0 lost, "
          f"{twice_final} ids with two final events, {twice_smtp} delivered twice at the SMTP side")
    assert p.pids() == pids, "a process died or was restarted"
    assert twice_final == 0


def topic_layout(p, prefix: str) -> dict[str, tuple[int, str]]:
    """Replicas per partition (the fewest) and min.insync.replicas of every topic whose name
    starts with ``prefix``, as the brokers report them."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def go() -> dict[str, tuple[int, str]]:
        admin = AIOKafkaAdminClient(**client_options(p.config))
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(prefix)]
            replicas = {d["topic"]: min(len(x["replicas"]) for x in d["partitions"])
                        for d in await admin.describe_topics(names)}
            out = {}
            for resp in await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, n, {"min.insync.replicas": None})
                     for n in names]):
                for res in resp.resources:
                    entries = {e[0]: e[1] for e in res[4]}
                    out[res[3]] = (replicas[res[3]], entries["min.insync.replicas"])
            return out
        finally:
            await admin.close()

    return asyncio.run(go())


def coordinator(p, group: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    async def go() -> int:
        admin = AIOKafkaAdminClient(**client_options(p.config))
        await admin.start()
        try:
            return await admin.find_coordinator(group)
        finally:
            await admin.close()

    return asyncio.run(go())


@pytest.mark.timeout(900)
def test_broker_killed_in_three_broker_cluster(cluster_factory, pipeline_factory) -> None:
    """Replication 3, min ISR 2: 5,000 messages to five ISPs; the senders' group coordinator
    killed (SIGKILL) mid-run, started again later. Nothing lost, no second final event."""
    cluster = cluster_factory(3)
    p = pipeline_factory(bootstrap=cluster.bootstrap, extra={"kafka": {"replication_factor": 3}})
    p.start(senders=2)
    layout = topic_layout(p, p.prefix)
    assert f"{p.prefix}brain-isp-state-changelog" in layout
    assert {t: v for t, v in layout.items() if v != (3, "2")} == {}
    docs = messages(5000, DOMAINS, prefix="rf3")
    for d in docs[::50]:
        d["to"] = "tempfail" + d["to"]
    ids = p.produce(docs)
    wait_progress(p, 500)
    pids = p.pids()
    victim = coordinator(p, f"{p.prefix}senders")
    before = delivered(p)
    cluster.kill(victim)
    killed_at = time.monotonic()
    wait_progress(p, before + 300, timeout=120)
    resumed_at = time.monotonic()
    down_for = time.monotonic() - killed_at
    cluster.start()
    twice_final, twice_smtp = check_outcome(p, ids, timeout=300)
    done_at = time.monotonic()
    print(f"\n3 brokers, node {victim} (senders' coordinator) killed with {before} of {len(ids)} "
          f"delivered: 300 more delivered {resumed_at - killed_at:.1f} s after the kill; restarted "
          f"after {down_for:.0f} s; all final {done_at - killed_at:.1f} s after the kill; 0 lost, "
          f"{twice_final} ids with two final events, {twice_smtp} delivered twice at the SMTP side")
    assert p.pids() == pids, "a process died or was restarted"
    assert twice_final == 0


def shared_pair() -> tuple[str, str]:
    """Two unknown domains (each its own ISP) that share one queue partition (of the default
    layout, the pipeline's)."""
    from kmta.config import Config
    from kmta.pipeline.rules import load_kb, partition_map

    config = Config()
    pmap = partition_map(config, load_kb(config))
    seen: dict[int, str] = {}
    for i in range(1000):
        d = f"site{i}.test"
        [part] = pmap.partitions_of(d)
        if part in seen:
            return seen[part], d
        seen[part] = d
    raise AssertionError("no two domains on one shared partition")


def queue_lag(p) -> int:
    """Queue records past the senders' committed offsets (held by a sender, or not taken)."""
    from aiokafka import AIOKafkaConsumer

    async def go() -> int:
        from kmta.pipeline.kafkaio import topic_partitions
        c = AIOKafkaConsumer(**client_options(p.config),
                             group_id=f"{p.prefix}senders", enable_auto_commit=False)
        await c.start()
        try:
            tps = await topic_partitions(p.config, [p.config.topic("queue")])
            end = await c.end_offsets(tps)
            lag = 0
            for tp in tps:
                committed = await c.committed(tp) or 0
                lag += end[tp] - committed
            return lag
        finally:
            await c.stop()

    return asyncio.run(go())


CONNECT_TIMEOUT = 4.0


def test_provider_that_never_answers(pipeline_factory) -> None:
    """One ISP's MX accepts TCP and never says a word (no banner). Its connections are given
    up at the rule's connect_timeout, its messages are deferred (not held), and the other ISPs,
    one of them on the same queue partition, are delivered as if it were not there."""
    import copy

    dead, alive = shared_pair()
    scenario = (f'[dns]\nttl = 60\n\n[[provider]]\nname = "dead"\nprofile = "generic"\n'
                f'ip = "127.0.1.11"\ndomains = ["{dead}"]\n[provider.behaviour]\nsilent = true\n'
                f'\n[[provider]]\nname = "alive"\nprofile = "generic"\nip = "127.0.1.10"\n'
                f'domains = ["{alive}"]\n\n[[provider]]\nname = "gmail"\nprofile = "gmail"\n'
                f'ip = "127.0.1.1"\ndomains = ["gmail.com"]\n\n[[provider]]\nname = "yahoo"\n'
                f'profile = "yahoo"\nip = "127.0.1.2"\ndomains = ["yahoo.com"]\n')
    rules = copy.deepcopy(FAST_RULES)  # one shared table: every ISP gets these timeouts
    rules["default"]["sending"].update(connect_timeout=f"{CONNECT_TIMEOUT:.0f}s", timeout="5s")
    p = pipeline_factory(scenario=scenario, rules=rules)
    p.start(senders=1)
    dead_ids = p.produce(messages(200, [dead], prefix="hung"))
    started = time.monotonic()
    live_ids = p.produce(messages(900, [alive, "gmail.com", "yahoo.com"], prefix="live"))
    finals = p.wait_finals(live_ids, timeout=90)
    live_s = time.monotonic() - started
    assert {f["status"] for f in finals.values()} == {"delivered"}
    # as fast as without the dead ISP (200 of its messages x 4 s would be minutes)
    assert live_s < 45, live_s
    # the dead ISP's messages are all deferred (with the timeout as the reason) or parked in
    # the delay topics: no sender holds them, the queue's commit point is at its end
    wait_for(lambda: queue_lag(p) == 0, 60, "every queue record with a committed outcome")
    settled_s = time.monotonic() - started
    events = p.results()
    deferred = {e["id"] for e in events if e["status"] == "deferred" and e["id"] in dead_ids}
    reasons = {e["category"] for e in events if e["id"] in dead_ids and e["status"] != "queued"}
    # every connection to the dead MX was given up at the timeout: none left open
    conns: dict[int, list[float]] = {}
    wait_for(lambda: all(len(v) == 2 for v in _dead_conns(p, conns).values()), 15,
             "every connection to the dead MX closed")
    held = [q - c for c, q in conns.values()]
    print(f"\ndead provider: {len(live_ids)} messages to the other ISPs all delivered in "
          f"{live_s:.1f} s; {len(deferred)} of {len(dead_ids)} dead-ISP messages deferred, "
          f"nothing held after {settled_s:.1f} s; {len(conns)} connections to the dead MX, "
          f"held {min(held):.1f}-{max(held):.1f} s (connect_timeout {CONNECT_TIMEOUT:.0f} s); "
          f"categories {sorted(reasons)}")
    assert conns and max(held) < CONNECT_TIMEOUT + 2.0
    assert deferred, "no message of the dead ISP was deferred"
    assert not {f["id"] for f in p.finals().values() if f["id"] in dead_ids
                and f["status"] == "delivered"}
    # nothing wedged: a later batch to the live ISPs goes through while the dead ISP's
    # messages come back for their retries
    later = p.produce(messages(60, [alive, "gmail.com"], prefix="later"))
    assert {f["status"] for f in p.wait_finals(later, 30).values()} == {"delivered"}
    p.pids()  # every process alive


def _dead_conns(p, out: dict[int, list[float]]) -> dict[int, list[float]]:
    out.clear()
    for e in p.sim_events():
        if e["provider"] == "dead" and e["event"] in ("connect", "quit"):
            out.setdefault(e["port"], []).append(e["time"])
    return out
