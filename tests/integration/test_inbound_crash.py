"""Nothing kmta inbound answered 250 is lost: DSNs accepted, the process killed with SIGKILL
before (or while) its processor reads them, then restarted: every accepted DSN becomes its
async_bounce event (at least once), and the receiver refuses mail while Kafka has not taken it."""
from __future__ import annotations

import smtplib

from kmta.policy.verp import envelope_sender
from tests.harness import free_port, wait_for
from tests.integration.test_feedback_loop import dsn_for

SECRET = "crash-verp-secret"


def test_accepted_mail_survives_kill_9(pipeline_factory) -> None:
    port = free_port()
    p = pipeline_factory(extra={
        "domains": [{"name": "shop.test", "return_path": "bounces.shop.test"}],
        "delivery": {"verp_secret": SECRET},
        "inbound": {"listen": f"127.0.0.1:{port}"}})

    def send(ids: list[str]) -> int:
        ok = 0
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            for i in ids:
                verp = envelope_sender(i, "bounces.shop.test", SECRET.encode())
                refused = s.sendmail("", [verp], dsn_for(verp, f"{i}@rcpt.test",
                                                         f"Subject: {i}"))
                ok += not refused
        return ok

    first = [f"c{i}" for i in range(30)]
    second = [f"d{i}" for i in range(10)]
    p.start_inbound()
    assert send(first) == 30  # each 250 came after the broker had it
    p.kill("inbound")  # SIGKILL: the processor may not have read (or committed) them
    p.start_inbound()
    assert send(second) == 10

    def bounced() -> set[str] | None:
        got = {e["id"] for e in p.results() if e["status"] == "async_bounce"}
        return got if got >= set(first + second) else None
    got = wait_for(bounced, 90, "an async_bounce event for every accepted DSN")
    assert got == set(first + second)
    sup = {r["address"] for r in p.read_topic("suppression")}
    assert {f"{i}@rcpt.test" for i in first + second} <= sup
