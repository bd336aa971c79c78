"""The loop closed, end to end on a real broker with real processes (worker, sender, kmta
inbound, kmta unsubscribe) and an aiosmtpd mailbox provider: messages delivered, then a DSN,
an ARF complaint and an RFC 8058 one-click POST come back; the results show ``delivered`` then
the feedback event, the address is suppressed in the worker's index, and the next message to
it ends ``suppressed``. Forged tokens, foreign RCPT domains and unreadable mail are refused or
dead-lettered, never dropped."""
from __future__ import annotations

import re
import smtplib
import sqlite3
from email import message_from_bytes
from pathlib import Path

import httpx

from kmta.pipeline.suppression import key_hash
from schemas.suppression import key_of
from sim.dns import DnsServerThread, Zone
from tests.harness import free_port, wait_for
from tests.receiving import start_receiver

VERP_SECRET = "loop-verp-secret"
UNSUB_SECRET = "loop-unsub-secret"


def dsn_for(verp: str, rcpt: str, msg_head: str) -> bytes:
    """A DSN as an MTA writes it (RFC 3464), returning the message's headers."""
    return f"""From: MAILER-DAEMON@mx.rcpt.test (Mail Delivery System)
To: {verp}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b0"

--b0
Content-Type: text/plain

Your message could not be delivered.
--b0
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.rcpt.test

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown

--b0
Content-Type: text/rfc822-headers

{msg_head}
--b0--
""".replace("\n", "\r\n").encode()


def arf_for(verp: str, rcpt: str, msg_head: str) -> bytes:
    return f"""From: fbl@isp.rcpt.test
To: fbl@bounces.shop.test
Subject: complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b1"

--b1
Content-Type: text/plain

This is an abuse report.
--b1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: RcptTestFBL/1.0
Version: 1
Original-Mail-From: <{verp}>
Original-Rcpt-To: <{rcpt}>
Source-IP: 127.0.0.2

--b1
Content-Type: text/rfc822-headers

{msg_head}
--b1--
""".replace("\n", "\r\n").encode()


def rcpt_zone() -> Zone:
    """The mailbox provider's domain rcpt.test, its MX on loopback."""
    return Zone(records={"rcpt.test": {"mx": [(10, "mx.rcpt.test")]},
                         "mx.rcpt.test": {"a": ["127.0.0.1"]}})


def in_index(p, key: str) -> bool:
    db = sqlite3.connect(f"file:{p.config.data_dir}/suppression/worker.sqlite?mode=ro", uri=True)
    try:
        return db.execute("SELECT 1 FROM s WHERE h=?", (key_hash(key),)).fetchone() is not None
    finally:
        db.close()


def test_bounce_complaint_unsubscribe_close_the_loop(pipeline_factory, tmp_path: Path) -> None:
    inbound_port, web_port = free_port(), free_port()
    p = pipeline_factory(extra={
        "domains": [{"name": "shop.test", "return_path": "bounces.shop.test"}],
        "delivery": {"verp_secret": VERP_SECRET},
        "inbound": {"listen": f"127.0.0.1:{inbound_port}"},
        "unsubscribe": {"listen": f"127.0.0.1:{web_port}", "secret": UNSUB_SECRET,
                        "base_url": "https://unsub.shop.test/lists"}})
    with DnsServerThread(rcpt_zone(), port=p.dns_port):
        ctrl, rec = start_receiver(p.smtp_port)
        try:
            p.start_worker()
            p.start_sender()
            p.start_inbound()
            p.start_unsubscribe()
            people = ["bob", "carol", "dave"]
            ids = p.produce([{"from": "news@shop.test", "to": f"{u}@rcpt.test",
                              "subject": "sale", "text": "hi", "campaign": "c1",
                              "id": f"first-{u}"} for u in people])
            finals = p.wait_finals(ids, timeout=120)
            assert {f["status"] for f in finals.values()} == {"delivered"}
            wait_for(lambda: len(rec.got) >= 3, 30, "three messages at the receiver")
            got = {g.rcpt: g for g in rec.got}
            heads = {u: got[f"{u}@rcpt.test"].data.split(b"\r\n\r\n", 1)[0].decode()
                     for u in people}
            verps = {u: got[f"{u}@rcpt.test"].mail_from for u in people}
            assert all(v.startswith("b+") and v.endswith("@bounces.shop.test")
                       for v in verps.values())

            with smtplib.SMTP("127.0.0.1", inbound_port, timeout=30) as s:
                s.ehlo("mx.rcpt.test")
                # foreign domains are refused at RCPT
                s.mail("<>")
                code, _ = s.rcpt("someone@other.test")
                assert code == 550
                s.rset()
                s.sendmail("", [verps["bob"]], dsn_for(verps["bob"], "bob@rcpt.test",
                                                      heads["bob"]))
                s.sendmail("fbl@isp.rcpt.test", ["fbl@bounces.shop.test"],
                           arf_for(verps["carol"], "carol@rcpt.test", heads["carol"]))
                s.sendmail("", [verps["bob"]], b"\x00\x01 \xff\xfe not a message at all\r\n")
                # a person's reply to the return path: read, logged, nothing recorded
                s.sendmail("reader@rcpt.test", [verps["bob"]],
                           b"From: reader@rcpt.test\r\nSubject: Re: sale\r\n\r\nblue?\r\n")
                s.sendmail("", ["postmaster@bounces.shop.test"],
                           dsn_for("postmaster@bounces.shop.test", "x@rcpt.test",
                                   "Subject: nothing of ours"))

            # RFC 8058 one-click, as Gmail sends it, to the URL in List-Unsubscribe
            m = message_from_bytes(got["dave@rcpt.test"].data)
            assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            url = re.search(r"<(https://[^>]+)>", m["List-Unsubscribe"]).group(1)
            assert url.startswith("https://unsub.shop.test/lists/u/")
            assert "mailto:unsubscribe@bounces.shop.test?subject=unsubscribe%20" in m[
                "List-Unsubscribe"]
            local = url.replace("https://unsub.shop.test", f"http://127.0.0.1:{web_port}")
            forged = local[:-3] + ("AAA" if not local.endswith("AAA") else "BBB")
            with httpx.Client(timeout=30) as h:
                assert h.get(local).status_code == 200  # the page: GET never unsubscribes
                assert "dave@rcpt.test" in h.get(local).text
                r = h.post(forged, data={"List-Unsubscribe": "One-Click"})
                assert r.status_code == 403
                r = h.post(local, data={"List-Unsubscribe": "One-Click"})
                assert r.status_code == 200, r.text

            def feedback() -> dict:
                return {(e["id"], e["status"]): e for e in p.results()
                        if e["status"] in ("async_bounce", "complaint", "unsubscribe")}
            fb = wait_for(lambda: (lambda f: f if len(f) >= 3 else None)(feedback()), 60,
                          "three feedback events")
            assert set(fb) == {("first-bob", "async_bounce"), ("first-carol", "complaint"),
                               ("first-dave", "unsubscribe")}
            bounce = fb[("first-bob", "async_bounce")]
            assert (bounce["to"], bounce["code"], bounce["enhanced_code"], bounce["category"],
                    bounce["final"], bounce["feedback"]["tied_by"]) == (
                "bob@rcpt.test", 550, "5.1.1", "bad_mailbox", False, "verp")
            complaint = fb[("first-carol", "complaint")]
            assert complaint["feedback"]["feedback_type"] == "abuse"
            assert complaint["feedback"]["source"] == "RcptTestFBL/1.0"
            assert fb[("first-dave", "unsubscribe")]["feedback"]["method"] == "one-click"
            # feedback comes after the final and does not change it
            # (the results topic is read across partitions: order by the events' times)
            for u in people:
                evs = [e for e in p.results() if e["id"] == f"first-{u}"]
                finals_u = [e for e in evs if e["final"]]
                assert [e["status"] for e in finals_u] == ["delivered"]
                late = [e for e in evs if e["status"] in ("async_bounce", "complaint",
                                                          "unsubscribe")]
                assert late and all(finals_u[0]["timestamp"] < e["timestamp"] for e in late)

            # unreadable mail and an untied DSN: dead letters with the raw message
            dl = wait_for(lambda: (lambda d: d if len(d) >= 2 else None)(
                [x for x in p.read_topic("dlq") if x["topic"].endswith("inbound")]), 60,
                "two inbound dead letters")
            assert any(x["original_encoding"] == "base64" and "no header" in x["reason"]
                       for x in dl)
            assert any("not tied" in x["reason"] for x in dl)

            keys = [key_of("bob@rcpt.test"), key_of("carol@rcpt.test"),
                    key_of("dave@rcpt.test", "campaign", "c1")]
            wait_for(lambda: all(in_index(p, k) for k in keys), 60,
                     "the worker's index to hold the three suppressions")
            ids2 = p.produce(
                [{"from": "news@shop.test", "to": f"{u}@rcpt.test", "subject": "again",
                  "text": "hi", "campaign": "c1", "id": f"second-{u}"} for u in people]
                + [{"from": "news@shop.test", "to": "dave@rcpt.test", "subject": "other list",
                    "text": "hi", "campaign": "c2", "id": "second-dave-c2"}])
            finals2 = p.wait_finals(ids2, timeout=120)
        finally:
            ctrl.stop()
    assert {i: f["status"] for i, f in finals2.items()} == {
        "second-bob": "suppressed", "second-carol": "suppressed", "second-dave": "suppressed",
        "second-dave-c2": "delivered"}  # dave left list c1 only
    sup = {r["address"] + "|" + r["scope"]: r for r in p.read_topic("suppression")}
    assert sup["bob@rcpt.test|global"]["reason"] == "async_bounce"
    assert sup["carol@rcpt.test|global"]["reason"] == "complaint"
    assert sup["dave@rcpt.test|campaign"]["reason"] == "unsubscribe"
    assert sup["dave@rcpt.test|campaign"]["value"] == "c1"
