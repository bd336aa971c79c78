"""The complaint-rate rule on the real pipeline: delivered campaign mail, one ARF complaint
through kmta inbound pushes the campaign's rate at gmail past the limit, the brain holds the
campaign and the sending domain (audit record, state), the next message waits (a deferred
event, no final), and it is delivered once an operator releases the holds."""
from __future__ import annotations

import smtplib

from tests.harness import free_port, wait_for
from tests.integration.test_control_cli import kmta
from tests.integration.test_feedback_loop import arf_for


def test_complaint_rate_holds_then_operator_releases(pipeline_factory) -> None:
    inbound_port = free_port()
    p = pipeline_factory(extra={
        "domains": [{"name": "shop.test", "return_path": "bounces.shop.test"}],
        "delivery": {"verp_secret": "rep-secret"},
        "inbound": {"listen": f"127.0.0.1:{inbound_port}"},
        "reputation": {"min_delivered": 5, "recheck": 2.0}})
    p.start()
    p.start_inbound()
    ids = p.produce([{"from": "news@shop.test", "to": f"u{i}@gmail.com", "subject": "s",
                      "text": "t", "campaign": "c1", "id": f"m{i}"} for i in range(5)])
    finals = p.wait_finals(ids, 120)
    assert {f["status"] for f in finals.values()} == {"delivered"}
    verp = finals["m0"]["sender"]
    assert verp.endswith("@bounces.shop.test")
    with smtplib.SMTP("127.0.0.1", inbound_port, timeout=30) as s:
        s.sendmail("fbl@isp.test", ["fbl@bounces.shop.test"], arf_for(
            verp, "u0@gmail.com", "X-Kmta-Id: m0\nFrom: news@shop.test\n"
            "Feedback-ID: c1:shop.test:default:shop.test"))

    def holds() -> dict | None:
        st = [s for s in p.read_topic("state") if s.get("isp") == "gmail"
              and not s.get("source_ip") and not s.get("pool")]
        return st[-1].get("holds") if st else None
    h = wait_for(holds, 60, "the brain to hold campaign c1 at gmail")
    assert set(h) == {"campaign:c1", "domain:bounces.shop.test"}
    assert "20.00% over 0.30%" in h["campaign:c1"]
    audit = [a["hold"] for a in p.read_topic("audit") if a.get("hold")]
    assert {a["key"] for a in audit} == {"campaign:c1", "domain:bounces.shop.test"}

    later = p.produce([{"from": "news@shop.test", "to": "u9@gmail.com", "subject": "s",
                        "text": "t", "campaign": "c1", "id": "held-1"}])
    ev = wait_for(lambda: next((e for e in p.results() if e["id"] == "held-1"
                                and e["status"] == "deferred"), None), 60,
                  "the held message's deferred event")
    assert ev["category"] == "reputation_hold" and "campaign:c1 held at gmail" in ev["response"]
    assert not [e for e in p.results() if e["id"] == "held-1" and e["final"]]

    for key in ("campaign:c1", "domain:bounces.shop.test"):
        r = kmta(p, "resume", "gmail", "--hold", key, "--actor", "ops", "--reason", "fixed")
        assert r.returncode == 0, r.stdout + r.stderr
    r = kmta(p, "resume", "gmail", "--hold", "campaign:nope")
    assert r.returncode != 0
    final = p.wait_finals(later, 60)["held-1"]
    assert final["status"] == "delivered"
    assert holds() is None
