"""Provider simulators on loopback, driven by aiosmtplib clients bound to 127.0.0.2 / 127.0.0.3."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import pytest

from sim.behaviour import ProviderBehaviour
from sim.eventlog import EventLog
from sim.probe import ProbeClient, send_one
from sim.smtp import ProviderSim

pytestmark = pytest.mark.integration

SRC_A, SRC_B = "127.0.0.2", "127.0.0.3"
_hosts = itertools.count(1)


async def until(condition, timeout: float = 5.0, interval: float = 0.02):
    """Poll ``condition`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
async def make_sim():
    sims: list[ProviderSim] = []

    async def make(log: EventLog | None = None, name: str = "gmail", **behaviour) -> ProviderSim:
        behaviour.setdefault("profile", name if name != "test" else "generic")
        host = f"127.0.4.{next(_hosts)}"  # one address per sim, as in a scenario
        sim = ProviderSim(name, ProviderBehaviour(**behaviour), host, 0, log=log)
        await sim.start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        await sim.stop()


async def test_capacity_is_per_source_ip(make_sim):
    sim = await make_sim(capacity=1, burst=1)
    results = [await send_one(sim.host, sim.port, f"u{i}@gmail.com", SRC_A) for i in range(10)]
    codes = [r.code for r in results]
    assert codes[0] == 250
    assert codes.count(421) >= 7, codes  # sent far faster than 1/s with a burst of 1
    throttled = next(r for r in results if r.code == 421)
    assert throttled.stage == "rcpt" and "4.7.28" in throttled.message
    assert "rate limited" in throttled.message and "[127.0.0.2]" in throttled.message
    # The other source IP has its own budget.
    assert (await send_one(sim.host, sim.port, "u@gmail.com", SRC_B)).accepted
    stats = sim.stats()
    assert stats[SRC_A]["throttled"] == codes.count(421)
    assert stats[SRC_A]["accepted"] == codes.count(250)
    assert stats[SRC_B] == {**stats[SRC_B], "accepted": 1, "throttled": 0}


async def test_max_connections_per_source_ip(make_sim):
    sim = await make_sim(name="outlook", max_connections=2)
    first, second, third = (ProbeClient(sim.host, sim.port, SRC_A) for _ in range(3))
    assert (await first.connect()).code == 220
    assert (await second.connect()).code == 220
    refused = await third.connect()
    assert refused.code == 421 and "maximum number of concurrent server connections" in (
        refused.message
    )
    other = ProbeClient(sim.host, sim.port, SRC_B)
    assert (await other.connect()).code == 220
    await first.close()

    async def reconnects() -> bool:
        client = ProbeClient(sim.host, sim.port, SRC_A)
        ok = (await client.connect()).code == 220
        await client.close()
        return ok

    await until(reconnects)
    for c in (second, other):
        await c.close()
    assert sim.stats()[SRC_A]["refused"] >= 1


async def test_messages_per_connection(make_sim):
    sim = await make_sim(name="yahoo", messages_per_connection=3)
    async with ProbeClient(sim.host, sim.port, SRC_A) as client:
        await client.connect()
        results = [await client.send(f"u{i}@yahoo.com") for i in range(4)]
        assert [r.code for r in results] == [250, 250, 250, 421]
        assert results[3].stage == "mail"
        assert results[3].message == (
            "Max message per connection reached, closing transmission channel"
        )
        assert not client.connected  # the provider hung up after 421


async def test_block_after_ignoring_throttling(make_sim):
    sim = await make_sim(
        name="yahoo", capacity=0.1, burst=1, block_after=3, block_window=30, block_duration=60
    )
    codes = [(await send_one(sim.host, sim.port, "u@yahoo.com", SRC_A)).code for _ in range(4)]
    assert codes == [250, 421, 421, 421]
    blocked = await send_one(sim.host, sim.port, "v@yahoo.com", SRC_A)
    assert blocked.code == 421 and "[TS03]" in blocked.message
    assert "permanently deferred" in blocked.message
    assert sim.rules.is_blocked(SRC_A, time.monotonic())
    assert (await send_one(sim.host, sim.port, "v@yahoo.com", SRC_B)).accepted
    assert sim.stats()[SRC_A]["blocked"] == 1


async def test_unknown_user_and_full_mailbox(make_sim):
    sim = await make_sim(name="test")
    unknown = await send_one(sim.host, sim.port, "unknown.person@shop.test", SRC_A)
    assert (unknown.code, unknown.stage) == (550, "rcpt")
    assert unknown.message.startswith("5.1.1") and "user unknown" in unknown.message
    full = await send_one(sim.host, sim.port, "full-box@shop.test", SRC_A)
    assert (full.code, full.stage) == (452, "rcpt") and full.message.startswith("4.2.2")
    rejected = await send_one(sim.host, sim.port, "reject-me@shop.test", SRC_A)
    assert (rejected.code, rejected.stage) == (554, "data") and "5.7.1" in rejected.message
    assert sim.stats()[SRC_A] == {**sim.stats()[SRC_A], "rejected": 2, "deferred": 1}


async def test_gmail_profile_multiline_unknown_user(make_sim):
    sim = await make_sim(name="gmail")
    r = await send_one(sim.host, sim.port, "unknown1@gmail.com", SRC_A)
    assert r.code == 550 and "NoSuchUser" in r.message and r.message.count("5.1.1") == 3


async def test_greylisting_accepts_after_the_delay(make_sim):
    sim = await make_sim(name="test", greylist_seconds=0.3, greylist_by="ip")
    started = time.monotonic()
    first = await send_one(sim.host, sim.port, "grey@shop.test", SRC_A, sender="s@sender.test")
    assert (first.code, first.stage) == (451, "rcpt") and "greylisted" in first.message

    async def retry_accepted():
        r = await send_one(sim.host, sim.port, "grey@shop.test", SRC_A, sender="s@sender.test")
        return r.accepted

    await until(retry_accepted, timeout=5, interval=0.05)
    assert time.monotonic() - started >= 0.3
    # Greylisted per address: a different source IP starts its own greylist entry.
    other = await send_one(sim.host, sim.port, "grey@shop.test", SRC_B, sender="s@sender.test")
    assert other.code == 451


async def test_greylisting_per_subnet_by_default(make_sim):
    sim = await make_sim(name="test", greylist_seconds=0.3)
    first = await send_one(sim.host, sim.port, "grey@shop.test", SRC_A, sender="s@sender.test")
    assert first.code == 451

    async def retry_accepted():
        r = await send_one(sim.host, sim.port, "grey@shop.test", SRC_A, sender="s@sender.test")
        return r.accepted

    await until(retry_accepted, timeout=5, interval=0.05)
    # postgrey's default: another address of the same /24 shares the passed entry
    other = await send_one(sim.host, sim.port, "grey@shop.test", SRC_B, sender="s@sender.test")
    assert other.accepted


async def test_tempfail_once_then_accept(make_sim):
    sim = await make_sim(name="test")
    first = await send_one(sim.host, sim.port, "tempfail-1@shop.test", SRC_A)
    assert (first.code, first.stage) == (451, "rcpt") and first.message.startswith("4.3.0")
    assert (await send_one(sim.host, sim.port, "tempfail-1@shop.test", SRC_A)).accepted


async def test_slow_recipient_delays_data_reply(make_sim):
    sim = await make_sim(name="test", slow_seconds=0.3)
    started = time.monotonic()
    assert (await send_one(sim.host, sim.port, "slow1@shop.test", SRC_A)).accepted
    assert time.monotonic() - started >= 0.3


async def test_event_log_lines(make_sim, tmp_path):
    path = tmp_path / "sim.jsonl"
    log = EventLog(path)
    sim = await make_sim(log=log, name="test", max_connections=1)
    ok = await send_one(sim.host, sim.port, "alice@shop.test", SRC_A, message_id="<m1@sender.test>")
    assert ok.accepted
    await send_one(sim.host, sim.port, "unknown@shop.test", SRC_B)

    def lines():
        try:
            return [json.loads(line) for line in path.read_text().splitlines()]
        except FileNotFoundError:
            return []

    records = await until(lambda: [r for r in lines() if r["event"] == "quit"][1:] and lines())
    by_event = {}
    for r in records:
        by_event.setdefault(r["event"], []).append(r)
    assert {"connect", "mail", "rcpt", "accepted", "rejected", "quit"} <= set(by_event)
    accepted = by_event["accepted"][0]
    assert accepted["provider"] == "test" and accepted["ip"] == SRC_A
    assert accepted["recipient"] == "alice@shop.test"
    assert accepted["message_id"] == "<m1@sender.test>" and accepted["kmta_id"] == "m1"
    assert accepted["size"] > 0 and isinstance(accepted["time"], float)
    assert by_event["rejected"][0]["recipient"] == "unknown@shop.test"
    assert by_event["rejected"][0]["ip"] == SRC_B
    log.close()
    # Accepted messages are kept as small records, not bodies.
    [rec] = list(sim.accepted)
    assert (rec.message_id, rec.kmta_id, rec.recipients) == (
        "<m1@sender.test>",
        "m1",
        ("alice@shop.test",),
    )


async def test_many_concurrent_connections(make_sim):
    sim = await make_sim(name="test")
    results = await asyncio.gather(
        *(
            send_one(sim.host, sim.port, f"user{i}@shop.test", SRC_A if i % 2 else SRC_B)
            for i in range(200)
        )
    )
    assert all(r.accepted for r in results)
    assert sim.totals()["accepted"] == 200 and len(sim.accepted) == 200


async def test_silent_provider_accepts_and_never_answers(make_sim, tmp_path):
    import aiosmtplib

    log = EventLog(tmp_path / "sim.jsonl")
    try:
        sim = await make_sim(log, name="test", silent=True)
        smtp = aiosmtplib.SMTP(hostname=sim.host, port=sim.port, timeout=0.5,
                               source_address=(SRC_A, 0))
        t0 = time.monotonic()
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await smtp.connect()  # the TCP connection is accepted; the banner never comes
        assert 0.4 < time.monotonic() - t0 < 3
        smtp.close()

        def events() -> list[dict]:
            log.flush()
            return [json.loads(x) for x in (tmp_path / "sim.jsonl").read_text().splitlines()]

        await until(lambda: [e["event"] for e in events()] == ["connect", "quit"])
        connect, quit_ = events()
        assert connect["port"] == quit_["port"] and quit_["messages"] == 0
    finally:
        log.close()  # an open log file left to the GC fails a later test (warnings are errors)
