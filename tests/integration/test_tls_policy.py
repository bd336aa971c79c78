"""TLS policy of the SMTP transport against real aiosmtpd servers on loopback: opportunistic
takes a self-signed certificate and records the session, verify defers with the certificate
error, required defers when STARTTLS is absent; a certificate from a trusted CA for the MX
name passes verify; MTA-STS enforce allows only the listed MX hosts."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from schemas import Envelope, MxHost, TlsPolicy
from senders.transport import ConnectFailed, SmtpTransport
from tests.harness import free_port
from tests.receiving import Recorder, make_ca, make_cert, server_context, start_receiver

MX = [MxHost(host="mx.rcpt.test", ips=["127.0.0.1"])]


def env(**kw: object) -> Envelope:
    return Envelope(id="m1", sender="a@shop.example", rcpt="b@rcpt.test", domain="rcpt.test",
                    isp="rcpt.test", data="From: a@shop.example\r\nSubject: s\r\n\r\nbody\r\n",
                    accepted_at=1.0, routed_at=1.0, mx=MX, **kw)


@pytest.fixture
def certs(tmp_path: Path) -> dict:
    ca_cert, ca_key, ca_path = make_ca(tmp_path)
    (tmp_path / "issued").mkdir()
    return {"self": make_cert(tmp_path, ["mx.rcpt.test"]),
            "ca": make_cert(tmp_path / "issued", ["mx.rcpt.test"], (ca_cert, ca_key)),
            "wrong_name": make_cert(tmp_path, ["other.test"], (ca_cert, ca_key)),
            "ca_path": str(ca_path)}


def deliver(port: int, level: str, ca: str | None = None, mx: list[MxHost] = MX,
            sts: TlsPolicy | None = None, e: Envelope | None = None):
    async def go():
        t = SmtpTransport(port, "kmta.test", ["127.0.0.0/8"], tls="opportunistic", ca_file=ca,
                          allow_special=["127.0.0.0/8"])
        conn = await t.connect(mx, None, 10, level, sts)
        try:
            return await conn.deliver(e or env(), 10)
        finally:
            await conn.close()
    return asyncio.run(go())


def test_opportunistic_takes_self_signed_and_records_tls(certs: dict) -> None:
    port = free_port()
    ctrl, rec = start_receiver(port, tls=server_context(*certs["self"]))
    try:
        out = deliver(port, "opportunistic")
    finally:
        ctrl.stop()
    assert out.accepted
    assert out.tls is not None and out.tls.version in ("TLSv1.2", "TLSv1.3")
    assert out.tls.cipher and out.tls.verified is False
    assert rec.got[0].tls


def test_opportunistic_without_starttls_is_plain() -> None:
    port = free_port()
    ctrl, rec = start_receiver(port)
    try:
        out = deliver(port, None)  # the transport's default: opportunistic
    finally:
        ctrl.stop()
    assert out.accepted and out.tls is None and not rec.got[0].tls


def test_verify_defers_with_the_certificate_error(certs: dict) -> None:
    port = free_port()
    ctrl, rec = start_receiver(port, tls=server_context(*certs["self"]))
    try:
        with pytest.raises(ConnectFailed) as e:
            deliver(port, "verify")
    finally:
        ctrl.stop()
    r = e.value.outcome.reply
    assert r.code == 451 and r.enhanced_code == "4.7.5" and r.internal
    assert "certificate verify failed" in r.text and "self-signed" in r.text
    assert not rec.got


def test_verify_passes_with_a_trusted_ca_and_checks_the_mx_name(certs: dict) -> None:
    port = free_port()
    ctrl, _ = start_receiver(port, tls=server_context(*certs["ca"]))
    try:
        out = deliver(port, "verify", ca=certs["ca_path"])
    finally:
        ctrl.stop()
    assert out.accepted and out.tls is not None and out.tls.verified is True
    ctrl, _ = start_receiver(port, tls=server_context(*certs["wrong_name"]))
    try:
        with pytest.raises(ConnectFailed) as e:
            deliver(port, "verify", ca=certs["ca_path"])
    finally:
        ctrl.stop()
    assert "Hostname mismatch" in e.value.outcome.reply.text or (
        "doesn't match" in e.value.outcome.reply.text)


def test_required_defers_when_starttls_is_absent() -> None:
    port = free_port()
    ctrl, rec = start_receiver(port)
    try:
        with pytest.raises(ConnectFailed) as e:
            deliver(port, "required")
    finally:
        ctrl.stop()
    r = e.value.outcome.reply
    assert r.code == 451 and "does not offer STARTTLS" in r.text
    assert not rec.got


def test_required_takes_self_signed(certs: dict) -> None:
    port = free_port()
    ctrl, _ = start_receiver(port, tls=server_context(*certs["self"]))
    try:
        out = deliver(port, "required")
    finally:
        ctrl.stop()
    assert out.accepted and out.tls is not None and not out.tls.verified


def test_mta_sts_enforce_allows_only_listed_mx(certs: dict) -> None:
    port = free_port()
    ctrl, _ = start_receiver(port, tls=server_context(*certs["ca"]))
    try:
        pol = TlsPolicy(mx=["*.rcpt.test"])
        out = deliver(port, "opportunistic", ca=certs["ca_path"], sts=pol,
                      e=env(tls_policy=pol))
        assert out.accepted and out.tls.verified
        with pytest.raises(ConnectFailed) as e:
            deliver(port, "opportunistic", ca=certs["ca_path"],
                    sts=TlsPolicy(mx=["mx.elsewhere.test"]))
        assert "not in the MTA-STS policy" in e.value.outcome.reply.text
        # an enforce message on an unverified connection: refused, to go on a new one
        out = deliver(port, "opportunistic", ca=certs["ca_path"], e=env(tls_policy=pol))
        assert not out.accepted and out.stage == "tls" and out.connection_lost
    finally:
        ctrl.stop()


class BrokenStartTls(SMTP):
    """Offers STARTTLS, then refuses it (as a server with a broken TLS setup does)."""

    async def smtp_STARTTLS(self, arg: str) -> None:
        await self.push("454 4.7.0 TLS not available due to temporary reason")


def test_failed_handshake_opportunistic_goes_plain_required_defers(certs: dict) -> None:
    class Ctrl(Controller):
        def factory(self) -> SMTP:
            return BrokenStartTls(self.handler, **self.SMTP_kwargs)

    port = free_port()
    rec = Recorder(None)
    ctrl = Ctrl(rec, hostname="127.0.0.1", port=port, tls_context=server_context(*certs["self"]))
    ctrl.start()
    try:
        out = deliver(port, "opportunistic")  # Postfix "may": plain text on a new connection
        assert out.accepted and out.tls is None
        assert len(rec.got) == 1 and not rec.got[0].tls
        with pytest.raises(ConnectFailed) as e:
            deliver(port, "required")
        assert "TLS with mx.rcpt.test failed" in e.value.outcome.reply.text
        assert "454" in e.value.outcome.reply.text or "TLS not available" in (
            e.value.outcome.reply.text)
        assert len(rec.got) == 1
    finally:
        ctrl.stop()
