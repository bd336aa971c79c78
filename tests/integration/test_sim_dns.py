"""The sim DNS server answers dnspython's async resolver over UDP and TCP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import dns.asyncquery
import dns.asyncresolver
import dns.flags
import dns.message
import dns.nameserver
import dns.query
import dns.rcode
import dns.resolver
import pytest

from sim.dns import DnsServer, DnsServerThread, Zone

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

ZONE = Zone(
    records={
        "gmail.com": {
            "mx": [(5, "gmail-smtp-in.l.google.com"), (10, "alt1.gmail-smtp-in.l.google.com")]
        },
        "gmail-smtp-in.l.google.com": {"a": ["127.0.1.1"]},
        "alt1.gmail-smtp-in.l.google.com": {"a": ["127.0.1.1"]},
        "implicit.test": {"a": ["127.0.1.10"]},
    },
    null_mx={"nullmx.test"},
    servfail={"broken.test"},
    ttl=42,
)


@pytest.fixture
async def server():
    srv = DnsServer(ZONE, "127.0.0.1", 0)
    await srv.start()
    yield srv
    await srv.stop()


def resolver_for(port: int) -> dns.asyncresolver.Resolver:
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", port)]
    r.lifetime = 3
    r.cache = None
    return r


@pytest.mark.parametrize("tcp", [False, True])
async def test_mx_and_a(server, tcp):
    r = resolver_for(server.port)
    answer = await r.resolve("gmail.com", "MX", tcp=tcp)
    assert sorted((rr.preference, rr.exchange.to_text()) for rr in answer) == [
        (5, "gmail-smtp-in.l.google.com."),
        (10, "alt1.gmail-smtp-in.l.google.com."),
    ]
    assert answer.rrset.ttl == 42
    a = await r.resolve("GMAIL-SMTP-IN.l.google.com.", "A", tcp=tcp)
    assert [rr.address for rr in a] == ["127.0.1.1"]
    assert a.response.flags & dns.flags.AA


async def test_aaaa_is_empty_noerror(server):
    with pytest.raises(dns.resolver.NoAnswer):
        await resolver_for(server.port).resolve("gmail-smtp-in.l.google.com", "AAAA")


async def test_unknown_name_is_nxdomain(server):
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver_for(server.port).resolve("nx.invalid", "MX")


async def test_null_mx(server):
    answer = await resolver_for(server.port).resolve("nullmx.test", "MX")
    assert [(rr.preference, rr.exchange.to_text()) for rr in answer] == [(0, ".")]


async def test_implicit_mx_domain_has_a_but_no_mx(server):
    r = resolver_for(server.port)
    with pytest.raises(dns.resolver.NoAnswer):
        await r.resolve("implicit.test", "MX")
    assert [rr.address for rr in await r.resolve("implicit.test", "A")] == ["127.0.1.10"]


async def test_servfail(server):
    q = dns.message.make_query("broken.test", "MX")
    response = await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=3)
    assert response.rcode() == dns.rcode.SERVFAIL
    with pytest.raises(dns.resolver.NoNameservers):
        await resolver_for(server.port).resolve("broken.test", "MX")


def test_thread_runner_for_synchronous_callers():
    with DnsServerThread(ZONE) as srv:
        q = dns.message.make_query("gmail.com", "MX")
        response = dns.query.tcp(q, "127.0.0.1", port=srv.port, timeout=3)
        assert response.rcode() == dns.rcode.NOERROR and len(response.answer[0]) == 2


async def test_standalone_process(tmp_path):
    zone_file = tmp_path / "zone.json"
    zone_file.write_text(json.dumps(ZONE.to_dict()))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error",
        "-m",
        "sim.dns",
        "--zone",
        str(zone_file),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().strip()
        assert line.startswith("listening 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        answer = await resolver_for(port).resolve("gmail.com", "MX")
        assert len(answer) == 2
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
