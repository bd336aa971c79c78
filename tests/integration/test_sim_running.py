"""The whole sim: scenario DNS + provider sims, and the ``kmta isp-sim`` process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import dns.asyncresolver
import dns.nameserver
import dns.resolver
import pytest

from sim.probe import send_one
from sim.scenario import run_scenario

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def resolver(port: int) -> dns.asyncresolver.Resolver:
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", port)]
    r.lifetime = 3
    return r


async def mx_address(r: dns.asyncresolver.Resolver, domain: str) -> str:
    """RFC 5321 §5.1 in miniature: lowest MX preference, else the domain's own A."""
    try:
        mx = sorted(await r.resolve(domain, "MX"), key=lambda rr: rr.preference)
        host = mx[0].exchange.to_text()
    except dns.resolver.NoAnswer:
        host = domain
    return (await r.resolve(host, "A"))[0].address


async def test_default_scenario_end_to_end(tmp_path):
    log = tmp_path / "sim.jsonl"
    running = await run_scenario(None, dns_port=0, smtp_port=0, log_path=log)
    try:
        r = resolver(running.dns.port)
        expected = {
            "gmail.com": "127.0.1.1",
            "yahoo.com": "127.0.1.2",
            "hotmail.com": "127.0.1.3",
            "mail.ru": "127.0.1.4",
            "yandex.ru": "127.0.1.5",
            "orange.fr": "127.0.1.6",
            "shop-example.test": "127.0.1.10",
            "implicit-mx.test": "127.0.1.10",
        }
        for domain, ip in expected.items():
            address = await mx_address(r, domain)
            assert address == ip, domain
            result = await send_one(address, running.smtp_port, f"bob@{domain}", "127.0.0.2")
            assert result.accepted, (domain, result)
        with pytest.raises(dns.resolver.NXDOMAIN):
            await r.resolve("nx.invalid", "MX")
        assert [rr.exchange.to_text() for rr in await r.resolve("nullmx.test", "MX")] == ["."]
        with pytest.raises(dns.resolver.NoNameservers):
            await r.resolve("servfail.test", "MX")
        stats = running.stats()
        assert stats["gmail"]["totals"]["accepted"] == 1
        assert stats["smallhosts"]["sources"]["127.0.0.2"]["accepted"] == 2
        assert stats["yahoo"]["ip"] == "127.0.1.2"
        assert any(line.startswith("gmail") for line in running.describe())
    finally:
        await running.stop()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert {e["provider"] for e in events if e["event"] == "accepted"} >= {
        "gmail",
        "yahoo",
        "outlook",
        "mailru",
        "yandex",
        "orange",
        "smallhosts",
    }


async def test_isp_sim_process_runs_until_sigterm(tmp_path):
    log = tmp_path / "cli.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sim",
        "--dns",
        "127.0.0.1:0",
        "--smtp-port",
        "0",
        "--log",
        str(log),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 15
        while not lines or lines[-1] != "ready":
            remaining = deadline - time.monotonic()
            assert remaining > 0, lines
            line = await asyncio.wait_for(proc.stdout.readline(), remaining)
            assert line, (lines, await proc.stderr.read())
            lines.append(line.decode().strip())
        gmail = next(line for line in lines if line.startswith("gmail"))
        port = int(gmail.split()[1].split(":")[1])
        assert gmail.split()[1].startswith("127.0.1.1:")
        assert (await send_one("127.0.1.1", port, "amy@gmail.com", "127.0.0.3")).accepted
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0
        totals = json.loads(out.decode().strip().splitlines()[-1])
        assert totals["gmail"]["accepted"] == 1
        assert '"event":"accepted"' in log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
