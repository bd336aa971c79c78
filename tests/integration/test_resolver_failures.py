"""kmta's resolver against a real local nameserver that fails: a black-holed name (no answer
at all) and a SERVFAIL name cost one lookup per ``[dns] failure_ttl``, not one per message,
and concurrent lookups of one domain share a query; other domains resolve meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from kmta.config import DnsConfig
from kmta.pipeline.resolver import MxStatus, Resolver
from sim.dns import DnsServer, Zone

pytestmark = pytest.mark.integration

TIMEOUT = 0.6


def zone() -> Zone:
    return Zone(records={"good.test": {"mx": [(10, "mx.good.test")]},
                         "mx.good.test": {"a": ["127.0.0.1"]}},
                servfail={"broken.test"}, silent={"black.test"})


@pytest.fixture
async def server():
    srv = DnsServer(zone(), "127.0.0.1", 0)
    await srv.start()
    yield srv
    await srv.stop()


def resolver(srv: DnsServer, failure_ttl: float) -> Resolver:
    return Resolver(DnsConfig(nameservers=[srv.address], timeout=TIMEOUT,
                              failure_ttl=failure_ttl))


async def test_a_black_holed_domain_is_asked_once_per_failure_ttl(server) -> None:
    r = resolver(server, failure_ttl=30)
    black = [asyncio.create_task(r.mx("black.test")) for _ in range(40)]
    await asyncio.sleep(0.05)
    good = await r.mx("good.test")  # answered while the black-holed lookup waits
    assert good.status is MxStatus.OK and [h.host for h in good.hosts] == ["mx.good.test"]
    assert not any(t.done() for t in black)
    results = await asyncio.gather(*black)
    assert {x.status for x in results} == {MxStatus.TEMPFAIL}
    asked = server.zone.asked["black.test"]
    assert asked >= 1 and r.lookups == 2  # one shared lookup for 40 messages, one for good
    # the next batch's messages: the remembered failure, no query and no wait for the timeout
    again = await asyncio.wait_for(asyncio.gather(*(r.mx("black.test") for _ in range(40))),
                                   TIMEOUT / 2)
    assert {x.status for x in again} == {MxStatus.TEMPFAIL}
    assert server.zone.asked["black.test"] == asked and r.lookups == 2


async def test_servfail_is_remembered_and_asked_again_after_the_ttl(server) -> None:
    r = resolver(server, failure_ttl=0.3)
    assert (await r.mx("broken.test")).status is MxStatus.TEMPFAIL
    assert (await r.mx("broken.test")).status is MxStatus.TEMPFAIL
    assert r.lookups == 1
    await asyncio.sleep(0.4)
    assert (await r.mx("broken.test")).status is MxStatus.TEMPFAIL
    assert r.lookups == 2


async def test_no_failure_ttl_asks_every_time(server) -> None:
    r = resolver(server, failure_ttl=0)
    for _ in range(3):
        assert (await r.mx("broken.test")).status is MxStatus.TEMPFAIL
    assert r.lookups == 3
    assert (await r.mx("nx.test")).status is MxStatus.NXDOMAIN  # negative: cached as before
    assert (await r.mx("nx.test")).status is MxStatus.NXDOMAIN
    assert r.lookups == 4


async def test_a_cancelled_caller_does_not_cancel_the_shared_lookup(server) -> None:
    r = resolver(server, failure_ttl=30)
    first = asyncio.create_task(r.mx("black.test"))
    second = asyncio.create_task(r.mx("black.test"))
    await asyncio.sleep(0.05)
    first.cancel()
    assert (await second).status is MxStatus.TEMPFAIL
    with pytest.raises(asyncio.CancelledError):
        await first
    assert r.lookups == 1
