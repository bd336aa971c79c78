"""``[unsubscribe] scope = "domain"`` end to end on a real broker with real processes (worker,
sender, kmta unsubscribe) and an aiosmtpd mailbox provider: a one-click POST to the URL of a
message from one sending domain writes a ``domain:<d>|<address>`` record; the worker's index
takes it, and the next message to the address from that domain ends ``suppressed`` whatever
its campaign, while mail from the other sending domain and to other addresses is delivered."""
from __future__ import annotations

import re
from email import message_from_bytes

import httpx

from schemas.suppression import key_of
from sim.dns import DnsServerThread
from tests.harness import free_port, wait_for
from tests.integration.test_feedback_loop import in_index, rcpt_zone
from tests.receiving import start_receiver


def test_domain_scoped_unsubscribe(pipeline_factory) -> None:
    web_port = free_port()
    p = pipeline_factory(extra={
        "domains": [{"name": "shop.test", "return_path": "bounces.shop.test"},
                    {"name": "other.test", "return_path": "bounces.other.test"}],
        "delivery": {"verp_secret": "scope-verp-secret"},
        "unsubscribe": {"listen": f"127.0.0.1:{web_port}", "secret": "scope-unsub-secret",
                        "base_url": "https://unsub.shop.test", "scope": "domain"}})
    with DnsServerThread(rcpt_zone(), port=p.dns_port):
        ctrl, rec = start_receiver(p.smtp_port)
        try:
            p.start_worker()
            p.start_sender()
            p.start_unsubscribe()
            # from a subdomain of shop.test: the record names the [[domains]] entry
            ids = p.produce([{"from": "news@mail.shop.test", "to": "dave@rcpt.test",
                              "subject": "sale", "text": "hi", "campaign": "c1",
                              "id": "first-dave"}])
            assert p.wait_finals(ids, timeout=120)["first-dave"]["status"] == "delivered"
            wait_for(lambda: rec.got, 30, "the message at the receiver")
            m = message_from_bytes(rec.got[0].data)
            url = re.search(r"<(https://[^>]+)>", m["List-Unsubscribe"]).group(1)
            local = url.replace("https://unsub.shop.test", f"http://127.0.0.1:{web_port}")
            with httpx.Client(timeout=30) as h:
                page = h.get(local)
                assert page.status_code == 200 and "all mail of <b>shop.test</b>" in page.text
                r = h.post(local, data={"List-Unsubscribe": "One-Click"})
                assert r.status_code == 200, r.text
            key = key_of("dave@rcpt.test", "domain", "shop.test")
            wait_for(lambda: in_index(p, key), 60, "the worker's index to hold the record")
            ids2 = p.produce([
                {"from": "news@shop.test", "to": "dave@rcpt.test", "subject": "again",
                 "text": "hi", "campaign": "c2", "id": "second-dave-c2"},
                {"from": "news@mail.shop.test", "to": "dave@rcpt.test", "subject": "again",
                 "text": "hi", "id": "second-dave-nocampaign"},
                {"from": "news@other.test", "to": "dave@rcpt.test", "subject": "other shop",
                 "text": "hi", "campaign": "c1", "id": "second-dave-other"},
                {"from": "news@shop.test", "to": "erin@rcpt.test", "subject": "again",
                 "text": "hi", "campaign": "c1", "id": "second-erin"}])
            finals = p.wait_finals(ids2, timeout=120)
        finally:
            ctrl.stop()
    assert {i: f["status"] for i, f in finals.items()} == {
        "second-dave-c2": "suppressed", "second-dave-nocampaign": "suppressed",
        "second-dave-other": "delivered", "second-erin": "delivered"}
    assert finals["second-dave-c2"]["response"] == "recipient is on the suppression list"
    unsub = [e for e in p.results() if e["status"] == "unsubscribe"]
    assert [(e["id"], e["feedback"]["method"]) for e in unsub] == [("first-dave", "one-click")]
    recs = [r for r in p.read_topic("suppression") if r["address"] == "dave@rcpt.test"]
    assert [(r["scope"], r["value"], r["reason"], r["id"]) for r in recs] == [
        ("domain", "shop.test", "unsubscribe", "first-dave")]
