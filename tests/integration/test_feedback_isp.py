"""Feedback events carry the ISP the recipient's MX points to, on a real broker with a real
kmta inbound process and a real DNS server: a complaint and a DSN about recipients of a hosted
domain (its MX at Google) end up in results under ``gmail``, one of a domain at Yandex under
``yandex``; a domain whose lookup fails (SERVFAIL) is its own ISP, as before, and its event is
written all the same."""
from __future__ import annotations

import smtplib

from kmta.policy.verp import envelope_sender
from sim.dns import DnsServerThread, Zone
from tests.harness import free_port, wait_for
from tests.integration.test_feedback_loop import arf_for, dsn_for

SECRET = "isp-verp-secret"


def zone() -> Zone:
    return Zone(records={
        "hosted.test": {"mx": [(1, "aspmx.l.google.com"), (5, "alt1.aspmx.l.google.com")]},
        "aspmx.l.google.com": {"a": ["127.0.0.1"]},
        "alt1.aspmx.l.google.com": {"a": ["127.0.0.1"]},
        "corp360.test": {"mx": [(10, "mx.yandex.net")]},
        "mx.yandex.net": {"a": ["127.0.0.1"]},
    }, servfail={"broken.test"})


def test_feedback_isp_from_the_recipients_mx(pipeline_factory) -> None:
    port = free_port()
    p = pipeline_factory(extra={
        "domains": [{"name": "shop.test", "return_path": "bounces.shop.test"}],
        "delivery": {"verp_secret": SECRET},
        "inbound": {"listen": f"127.0.0.1:{port}"}})
    with DnsServerThread(zone(), port=p.dns_port):
        p.start_inbound()
        reports = {  # id: (recipient, report)
            "m-ann": ("ann@hosted.test", arf_for), "m-bob": ("bob@Hosted.test", dsn_for),
            "m-cat": ("cat@corp360.test", dsn_for), "m-dan": ("dan@broken.test", arf_for),
            "m-eve": ("eve@gmail.com", dsn_for)}
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            for i, (rcpt, report) in reports.items():
                verp = envelope_sender(i, "bounces.shop.test", SECRET.encode())
                to = "fbl@bounces.shop.test" if report is arf_for else verp
                assert not s.sendmail("", [to], report(verp, rcpt, f"Subject: {i}"))

        def feedback() -> dict[str, dict] | None:
            got = {e["id"]: e for e in p.results()
                   if e["status"] in ("complaint", "async_bounce")}
            return got if set(got) >= set(reports) else None
        fb = wait_for(feedback, 60, "a feedback event for each report")
    assert {i: (e["status"], e["isp"], e["domain"]) for i, e in fb.items()} == {
        "m-ann": ("complaint", "gmail", "hosted.test"),
        "m-bob": ("async_bounce", "gmail", "hosted.test"),
        "m-cat": ("async_bounce", "yandex", "corp360.test"),
        "m-dan": ("complaint", "broken.test", "broken.test"),  # SERVFAIL: its own ISP
        "m-eve": ("async_bounce", "gmail", "gmail.com")}  # a member domain
    sup = {r["address"] for r in p.read_topic("suppression")}
    assert {"ann@hosted.test", "bob@hosted.test", "cat@corp360.test", "dan@broken.test",
            "eve@gmail.com"} <= sup
    log = p.log("inbound")
    assert "MX lookup failed for 1 domain(s)" in log and "broken.test" in log
