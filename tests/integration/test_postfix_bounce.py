"""A real Postfix between kmta and the mailbox: Postfix accepts kmta's message (``delivered``),
the mailbox behind it refuses the recipient, and Postfix's bounce(8) sends a real RFC 3464 DSN
to the VERP address; kmta inbound ties it to the message (``async_bounce`` after the final),
the worker suppresses the address and the next message to it ends ``suppressed``."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from kmta.pipeline.suppression import key_hash
from sim.dns import DnsServerThread, Zone
from tests.harness import free_port, wait_for
from tests.postfix import Postfix, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


class Mailbox:
    """The final mailbox: knows no local part starting with ``gone``."""

    def __init__(self) -> None:
        self.got: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.startswith("gone"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.got += envelope.rcpt_tos
        return "250 2.0.0 OK"


def test_postfix_dsn_closes_the_loop(pipeline_factory, tmp_path: Path) -> None:
    inbound_port, mbox_port = free_port(), free_port()
    p = pipeline_factory(extra={
        "domains": [{"name": "shop.test", "return_path": "bounces.shop.test"}],
        "delivery": {"verp_secret": "pf-verp-secret"},
        "inbound": {"listen": f"127.0.0.1:{inbound_port}"}})
    zone = Zone(records={"rcpt.test": {"mx": [(10, "mx.rcpt.test")]},
                         "mx.rcpt.test": {"a": ["127.0.0.1"]}})
    box = Mailbox()
    mbox = Controller(box, hostname="127.0.0.1", port=mbox_port)
    pf = Postfix(tmp_path, p.smtp_port, "rcpt.test", mbox_port,
                 {"bounces.shop.test": inbound_port})
    with DnsServerThread(zone, port=p.dns_port):
        mbox.start()
        pf.start()
        try:
            p.start_worker()
            p.start_sender()
            p.start_inbound()
            first = p.produce([
                {"from": "news@shop.test", "to": "gone@rcpt.test", "subject": "hi",
                 "text": "x", "id": "first-gone", "campaign": "c1"},
                {"from": "news@shop.test", "to": "here@rcpt.test", "subject": "hi",
                 "text": "x", "id": "first-here", "campaign": "c1"}])
            finals = p.wait_finals(first, 120)
            assert {i: f["status"] for i, f in finals.items()} == {
                "first-gone": "delivered", "first-here": "delivered"}  # Postfix took both

            def late() -> dict | None:
                return next((e for e in p.results() if e["id"] == "first-gone"
                             and e["status"] == "async_bounce"), None)
            ev = wait_for(late, 90, "Postfix's DSN as an async_bounce event")
            assert (ev["to"], ev["code"], ev["enhanced_code"], ev["category"], ev["final"],
                    ev["campaign"]) == ("gone@rcpt.test", 550, "5.1.1", "bad_mailbox", False,
                                        "c1")
            assert ev["feedback"]["tied_by"] == "verp"
            assert ev["feedback"]["reporting_mta"] == "mx.rcpt.test"
            assert "User unknown" in ev["response"]
            assert "sender non-delivery notification" in pf.logtext()
            delivered = finals["first-gone"]
            assert delivered["timestamp"] < ev["timestamp"]  # after the final, not changing it
            assert [e["status"] for e in p.results()
                    if e["id"] == "first-gone" and e["final"]] == ["delivered"]
            assert not [e for e in p.results() if e["id"] == "first-here"
                        and e["status"] == "async_bounce"]

            def indexed() -> bool:
                db = sqlite3.connect(f"file:{p.config.data_dir}/suppression/worker.sqlite"
                                     "?mode=ro", uri=True)
                try:
                    return db.execute("SELECT 1 FROM s WHERE h=?", (key_hash(
                        "gone@rcpt.test"),)).fetchone() is not None
                finally:
                    db.close()
            wait_for(indexed, 60, "the worker's index to hold gone@rcpt.test")
            second = p.produce([
                {"from": "news@shop.test", "to": "gone@rcpt.test", "subject": "again",
                 "text": "x", "id": "second-gone"},
                {"from": "news@shop.test", "to": "here@rcpt.test", "subject": "again",
                 "text": "x", "id": "second-here"}])
            finals2 = p.wait_finals(second, 120)
        finally:
            pf.stop()
            mbox.stop()
    assert {i: f["status"] for i, f in finals2.items()} == {
        "second-gone": "suppressed", "second-here": "delivered"}
