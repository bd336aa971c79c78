"""SMTPUTF8 (RFC 6531) and 8BITMIME (RFC 6152) against real aiosmtpd servers on loopback: the
sender's transport (senders/transport.py) delivers a non-ASCII address with SMTPUTF8 when the
server offers it and bounces it with a clear reason when not; 8-bit content goes with
BODY=8BITMIME, or is bounced when the server lacks it. Before, aiosmtplib raised inside the
delivery task on such an address and the message got no outcome at all."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller

from kmta.policy.compose import compose
from schemas import Envelope, MxHost, OutboxMessage
from senders.transport import SmtpTransport
from tests.harness import free_port

pytestmark = pytest.mark.integration


@dataclass
class Recorder:
    """aiosmtpd handler: records what arrived; ``drop`` removes EHLO keywords (a server that
    does not offer them)."""

    drop: tuple[str, ...] = ()
    got: list[tuple[str, list[str], list[str], bytes]] = field(default_factory=list)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [r for r in responses if r[4:].split(" ")[0] not in self.drop]

    async def handle_DATA(self, server, session, envelope) -> str:
        opts = [o for o in envelope.mail_options if not o.startswith("SIZE=")]
        self.got.append((envelope.mail_from, list(envelope.rcpt_tos), opts,
                         envelope.original_content))
        return "250 2.0.0 queued"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[tuple[Recorder, int]]:
    utf8, drop = request.param
    rec = Recorder(drop=drop)
    port = free_port()
    ctl = Controller(rec, hostname="127.0.0.1", port=port, enable_SMTPUTF8=utf8)
    ctl.start()
    try:
        yield rec, port
    finally:
        ctl.stop()


def envelope(sender: str, rcpt: str, data: str | None = None) -> Envelope:
    if data is None:
        msg = OutboxMessage.model_validate({"from": sender, "to": rcpt.replace(
            "xn--bcher-kva", "bücher"), "subject": "Grüße",
                                            "text": "Hällo\n"})
        data = compose(msg, "m-1", "kmta.test", 1_790_000_000.0)
    domain = rcpt.rpartition("@")[2]
    return Envelope(id="m-1", sender=sender, rcpt=rcpt, domain=domain, isp="x", data=data,
                    accepted_at=0, routed_at=0)


async def deliver(port: int, *envs: Envelope) -> list:
    transport = SmtpTransport(port, "kmta.test", ["127.0.0.0/8"], allow_special=["127.0.0.0/8"])
    conn = await transport.connect([MxHost(host="mx.test", ips=["127.0.0.1"])], None, 5)
    try:
        return [await conn.deliver(env, 10) for env in envs]
    finally:
        await conn.close()


UTF8_RCPT = "üser@xn--bcher-kva.example"  # as the router writes it: the domain's A-label
EIGHT_BIT = "Subject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n" \
            "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n"


@pytest.mark.parametrize("server", [(True, ())], indirect=True)
async def test_utf8_address_delivered_with_smtputf8(server: tuple[Recorder, int]) -> None:
    rec, port = server
    (out,) = await deliver(port, envelope("news@shop.example", UTF8_RCPT))
    assert out.accepted, out.reply
    ((mail_from, rcpts, opts, content),) = rec.got
    assert rcpts == [UTF8_RCPT] and mail_from == "news@shop.example"
    assert "SMTPUTF8" in opts
    assert f"To: {UTF8_RCPT}\r\n".encode() in content  # RFC 6532: the header as UTF-8


@pytest.mark.parametrize("server", [(False, ())], indirect=True)
async def test_utf8_address_bounced_without_smtputf8(server: tuple[Recorder, int]) -> None:
    rec, port = server
    bad, good = await deliver(port, envelope("news@shop.example", UTF8_RCPT),
                              envelope("news@shop.example", "ann@shop.example"))
    assert not bad.accepted and bad.reply.code >= 500 and bad.stage == "mail"
    assert (bad.reply.code, bad.reply.enhanced_code) == (550, "5.6.7")
    assert "does not offer SMTPUTF8" in bad.reply.text and not bad.connection_lost
    # nothing was sent for it; the same connection delivers the next message
    assert good.accepted and [g[1] for g in rec.got] == [["ann@shop.example"]]


@pytest.mark.parametrize("server", [(True, ())], indirect=True)
async def test_8bit_body_goes_with_8bitmime(server: tuple[Recorder, int]) -> None:
    rec, port = server
    ascii_msg = envelope("news@shop.example", "ann@shop.example",
                         "Subject: hi\r\n\r\nHello\r\n")
    composed = envelope("news@shop.example", "ann@shop.example")  # text "Hällo": 8bit
    eight = envelope("news@shop.example", "ann@shop.example", EIGHT_BIT)
    outs = await deliver(port, ascii_msg, composed, eight)
    assert all(o.accepted for o in outs)
    assert rec.got[0][2] == []  # 7-bit: no parameter
    assert rec.got[1][2] == ["BODY=8BITMIME"]  # composed non-ASCII text is not re-encoded
    assert rec.got[1][3].endswith("Hällo\r\n".encode())
    assert rec.got[2][2] == ["BODY=8BITMIME"]
    assert rec.got[2][3].endswith("Grüße\r\n".encode())


@pytest.mark.parametrize("server", [(True, ("8BITMIME",))], indirect=True)
async def test_8bit_body_bounced_without_8bitmime(server: tuple[Recorder, int]) -> None:
    rec, port = server
    (out,) = await deliver(port, envelope("news@shop.example", "ann@shop.example", EIGHT_BIT))
    assert not out.accepted and out.reply.code >= 500
    assert (out.reply.code, out.reply.enhanced_code) == (554, "5.6.3")
    assert "8BITMIME" in out.reply.text and rec.got == []
