"""MTA-STS (RFC 8461) against a local HTTPS policy server and the test DNS (loopback only):
the policy is found, cached for max_age (the clock is an argument: no sleeping), refetched when
the TXT id changes, and an enforce policy turns certificate and MX checks on at the sender."""
from __future__ import annotations

import asyncio
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kmta.config import Config
from kmta.pipeline.resolver import Resolver
from schemas import MxHost
from senders.transport import ConnectFailed, SmtpTransport
from sim.dns import DnsServerThread, Zone
from streams.mtasts import TXT_RECHECK, MtaSts
from tests.harness import free_port
from tests.receiving import make_ca, make_cert, server_context, start_receiver

NOW = 1_800_000_000.0


class PolicyServer:
    """HTTPS on 127.0.0.1 serving /.well-known/mta-sts.txt; counts requests."""

    def __init__(self, ctx: ssl.SSLContext, port: int) -> None:
        self.policy = "version: STSv1\nmode: enforce\nmx: *.rcpt.test\nmax_age: 86400\n"
        self.hosts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hosts.append(self.headers.get("Host", ""))
                if self.path != "/.well-known/mta-sts.txt":
                    self.send_error(404)
                    return
                body = outer.policy.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def world(tmp_path: Path):
    ca_cert, ca_key, ca_path = make_ca(tmp_path)
    (tmp_path / "sts").mkdir()
    (tmp_path / "mx").mkdir()
    sts_cert = make_cert(tmp_path / "sts", ["mta-sts.rcpt.test"], (ca_cert, ca_key))
    mx_cert = make_cert(tmp_path / "mx", ["mx.rcpt.test"], (ca_cert, ca_key))
    dns_port, https_port = free_port(), free_port()
    zone = Zone(records={
        "rcpt.test": {"mx": [(10, "mx.rcpt.test")]},
        "mx.rcpt.test": {"a": ["127.0.0.1"]},
        "_mta-sts.rcpt.test": {"txt": ["v=STSv1; id=2026a"]},
        "mta-sts.rcpt.test": {"a": ["127.0.0.1"]},
        "_mta-sts.testing.test": {"txt": ["v=STSv1; id=1"]},
        "mta-sts.testing.test": {"a": ["127.0.0.1"]},
    })
    config = Config.model_validate({
        "dns": {"nameservers": [f"127.0.0.1:{dns_port}"], "negative_ttl": 300},
        "delivery": {"tls_ca_file": str(ca_path), "mta_sts_port": https_port,
                     "allow_special": ["127.0.0.0/8"]}})
    server = PolicyServer(server_context(*sts_cert), https_port)
    with DnsServerThread(zone, port=dns_port):
        yield {"config": config, "zone": zone, "server": server, "mx_cert": mx_cert,
               "self_cert": make_cert(tmp_path, ["mx.rcpt.test"]), "ca": str(ca_path)}
    server.close()


def test_policy_found_cached_and_refetched_on_a_new_id(world: dict) -> None:
    async def go() -> None:
        sts = MtaSts(world["config"], Resolver(world["config"].dns))
        pol = await sts.enforced("rcpt.test", NOW)
        assert pol is not None and pol.mx == ["*.rcpt.test"] and pol.id == "2026a"
        assert world["server"].hosts == ["mta-sts.rcpt.test"]  # Host header, SNI by name
        # cached: neither the TXT record nor the policy is fetched again within the hour
        for dt in (1, 600, TXT_RECHECK - 1):
            assert (await sts.enforced("rcpt.test", NOW + dt)) == pol
        assert sts.fetches == 1
        # the TXT record is checked again; same id: the cached policy stays
        assert (await sts.enforced("rcpt.test", NOW + TXT_RECHECK + 1)) == pol
        assert sts.fetches == 1
        # a new id: the policy is fetched again (now in testing mode: no enforcement)
        world["zone"].records["_mta-sts.rcpt.test"]["txt"] = ["v=STSv1; id=2026b"]
        world["server"].policy = world["server"].policy.replace("enforce", "testing")
        assert (await sts.enforced("rcpt.test", NOW + 2 * TXT_RECHECK + 2)) is None
        assert sts.fetches == 2
        # no record at all: nothing enforced, nothing fetched
        assert (await sts.enforced("plain.test", NOW)) is None
        assert sts.fetches == 2
    asyncio.run(go())


def test_cached_policy_survives_a_failing_server_until_max_age(world: dict) -> None:
    async def go() -> None:
        sts = MtaSts(world["config"], Resolver(world["config"].dns))
        assert (await sts.enforced("rcpt.test", NOW)) is not None
        world["server"].close()
        world["zone"].records["_mta-sts.rcpt.test"]["txt"] = ["v=STSv1; id=2026c"]
        t = NOW + TXT_RECHECK + 1  # new id, the fetch fails: the old policy stays in force
        assert (await sts.enforced("rcpt.test", t)) is not None
        assert (await sts.enforced("rcpt.test", NOW + 86400 + 1)) is None  # max_age ended
    asyncio.run(go())


def test_enforce_turns_on_certificate_and_mx_checks(world: dict) -> None:
    async def go(port: int, mx: list[MxHost]):
        sts = MtaSts(world["config"], Resolver(world["config"].dns))
        pol = await sts.enforced("rcpt.test", NOW)
        t = SmtpTransport(port, "kmta.test", ["127.0.0.0/8"], tls="opportunistic",
                          allow_special=["127.0.0.0/8"],
                          ca_file=world["ca"])
        conn = await t.connect(mx, None, 10, None, pol)
        await conn.close()
        return conn

    mx = [MxHost(host="mx.rcpt.test", ips=["127.0.0.1"])]
    port = free_port()
    ctrl, _ = start_receiver(port, tls=server_context(*world["self_cert"]))
    try:  # the ISP is opportunistic, but the domain enforces: a self-signed MX is refused
        with pytest.raises(ConnectFailed) as e:
            asyncio.run(go(port, mx))
        assert "certificate verify failed" in e.value.outcome.reply.text
        assert "mta-sts" in e.value.outcome.reply.text
    finally:
        ctrl.stop()
    ctrl, _ = start_receiver(port, tls=server_context(*world["mx_cert"]))
    try:
        conn = asyncio.run(go(port, mx))
        assert conn.tls is not None and conn.tls.verified
        with pytest.raises(ConnectFailed) as e:  # an MX outside the policy's patterns
            asyncio.run(go(port, [MxHost(host="mx.other.test", ips=["127.0.0.1"])]))
        assert "not in the MTA-STS policy" in e.value.outcome.reply.text
    finally:
        ctrl.stop()
