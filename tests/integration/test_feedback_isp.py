"""Feedback events carry the ISP the recipient's MX points to, on a real broker with a real
kmta inbound process and a real DNS server: a complaint and a DSN about recipients of a hosted
domain (its MX at Google) end up in results under ``gmail``, one of a domain at Yandex under
``yandex``; a domain whose lookup fails (SERVFAIL) is its own ISP, as before, and its event is
written all the same. kmta unsubscribe does the same for a one-click unsubscribe."""
from __future__ import annotations

import smtplib
import socket
import time

import httpx

from kmta.config import DnsConfig
from kmta.pipeline.feedbackisp import FAILED, MEMBER, MX, NO_MX, FeedbackIsps
from kmta.pipeline.resolver import Resolver
from kmta.policy.kb import KnowledgeBase
from kmta.policy.unsubscribe import links
from kmta.policy.verp import envelope_sender
from sim.dns import DnsServer, DnsServerThread, Zone
from tests.harness import free_port, wait_for
from tests.integration.test_feedback_loop import arf_for, dsn_for

SECRET = "isp-verp-secret"
UNSUB_SECRET = "isp-unsub-secret"


def zone() -> Zone:
    return Zone(records={
        "hosted.test": {"mx": [(1, "aspmx.l.google.com"), (5, "alt1.aspmx.l.google.com")]},
        "aspmx.l.google.com": {"a": ["127.0.0.1"]},
        "alt1.aspmx.l.google.com": {"a": ["127.0.0.1"]},
        "corp360.test": {"mx": [(10, "mx.yandex.net")]},
        "mx.yandex.net": {"a": ["127.0.0.1"]},
    }, servfail={"broken.test"})


def test_feedback_isp_from_the_recipients_mx(pipeline_factory) -> None:
    port, web_port = free_port(), free_port()
    p = pipeline_factory(extra={
        "domains": [{"name": "shop.test", "return_path": "bounces.shop.test"}],
        "delivery": {"verp_secret": SECRET},
        "inbound": {"listen": f"127.0.0.1:{port}"},
        "unsubscribe": {"listen": f"127.0.0.1:{web_port}", "secret": UNSUB_SECRET,
                        "base_url": "https://unsub.shop.test"}})
    with DnsServerThread(zone(), port=p.dns_port):
        p.start_inbound()
        p.start_unsubscribe()
        url, _ = links(UNSUB_SECRET.encode(), f"http://127.0.0.1:{web_port}", "m-fay",
                       "fay@hosted.test", "c1", None)
        with httpx.Client(timeout=30) as h:
            r = h.post(url, data={"List-Unsubscribe": "One-Click"})
            assert r.status_code == 200, r.text
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
                   if e["status"] in ("complaint", "async_bounce", "unsubscribe")}
            return got if set(got) >= {*reports, "m-fay"} else None
        fb = wait_for(feedback, 60, "a feedback event for each report")
    assert {i: (e["status"], e["isp"], e["domain"]) for i, e in fb.items()} == {
        "m-ann": ("complaint", "gmail", "hosted.test"),
        "m-bob": ("async_bounce", "gmail", "hosted.test"),
        "m-cat": ("async_bounce", "yandex", "corp360.test"),
        "m-dan": ("complaint", "broken.test", "broken.test"),  # SERVFAIL: its own ISP
        "m-eve": ("async_bounce", "gmail", "gmail.com"),  # a member domain
        "m-fay": ("unsubscribe", "gmail", "hosted.test")}  # kmta unsubscribe
    sup = {r["address"] for r in p.read_topic("suppression")}
    assert {"ann@hosted.test", "bob@hosted.test", "cat@corp360.test", "dan@broken.test",
            "eve@gmail.com"} <= sup
    log = p.log("inbound")
    assert "MX lookup failed for 1 domain(s)" in log and "broken.test" in log


async def test_real_nameserver_answers_cached_and_a_silent_one_bounded() -> None:
    """The resolver's cache carries a domain's ISP across batches (the server gone, the answer
    stays for its TTL); a nameserver that never answers costs the deadline, not the
    resolver's longer lifetime."""
    kb = KnowledgeBase.load()
    async with DnsServer(zone(), port=0) as server:
        isps = FeedbackIsps(kb, Resolver(DnsConfig(nameservers=[server.address], timeout=2)),
                            timeout=2)
        assert await isps.resolve(["hosted.test", "corp360.test", "broken.test",
                                   "nowhere.test"]) == {
            "hosted.test": "gmail", "corp360.test": "yandex", "broken.test": "broken.test",
            "nowhere.test": "nowhere.test"}
        assert isps.counts == {MX: 2, FAILED: 1, NO_MX: 1}
    assert await isps.resolve(["hosted.test"]) == {"hosted.test": "gmail"}
    assert isps.counts[MX] == 3

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # takes queries, answers none
        ns = f"127.0.0.1:{silent.getsockname()[1]}"
        isps = FeedbackIsps(kb, Resolver(DnsConfig(nameservers=[ns], timeout=30)), timeout=0.5)
        t0 = time.monotonic()
        assert await isps.resolve(["hosted.test", "gmail.com"]) == {
            "hosted.test": "hosted.test", "gmail.com": "gmail"}
        took = time.monotonic() - t0
    assert 0.5 <= took < 3
    assert isps.counts == {FAILED: 1, MEMBER: 1}
