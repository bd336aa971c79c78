"""The road a message travels, end to end: real broker, real worker and sender processes,
simulated providers over real SMTP and DNS."""
from __future__ import annotations

from collections import Counter

from tests.harness import messages, wait_for


def test_messages_end_with_one_final_each(pipeline_factory) -> None:
    p = pipeline_factory()
    p.start(senders=1)
    docs = messages(200, ["gmail.com", "yahoo.com", "outlook.com", "shop-example.test"])
    docs.append({"from": "s@kmta.test", "to": "unknown7@gmail.com", "subject": "x", "text": "y"})
    docs.append({"from": "s@kmta.test", "to": "tempfail1@yahoo.com", "subject": "x",
                 "text": "y"})
    docs.append({"from": "s@kmta.test", "to": "a@nx.invalid", "subject": "x", "text": "y"})
    docs.append({"from": "s@kmta.test", "to": "a@nullmx.test", "subject": "x", "text": "y"})
    ids = p.produce(docs)
    finals = p.wait_finals(ids, timeout=120)
    by_to = {f["to"]: f for f in finals.values()}
    assert by_to["unknown7@gmail.com"]["status"] == "bounced"
    assert by_to["unknown7@gmail.com"]["code"] == 550
    assert by_to["unknown7@gmail.com"]["category"] == "bad_mailbox"
    assert by_to["tempfail1@yahoo.com"]["status"] == "delivered"
    assert by_to["a@nx.invalid"]["status"] == "bounced"
    assert by_to["a@nullmx.test"]["status"] == "bounced"
    assert by_to["a@nullmx.test"]["code"] == 556
    statuses = Counter(f["status"] for f in finals.values())
    assert statuses["delivered"] == 201, statuses
    events = p.results()
    tf = [e for e in events if e["to"] == "tempfail1@yahoo.com"]
    assert [e["status"] for e in tf] == ["queued", "deferred", "delivered"]
    assert tf[1]["code"] == 451 and tf[1]["next_attempt_at"] > tf[1]["timestamp"]
    finals_per_id = Counter(e["id"] for e in events if e["final"])
    assert set(finals_per_id.values()) == {1}
    isps = {f["isp"] for f in finals.values() if f["status"] == "delivered"}
    assert {"gmail", "yahoo", "outlook", "shop-example.test"} <= isps
    # what the providers saw: each delivered id arrived exactly once
    accepted = Counter(e.get("kmta_id") for e in wait_for(
        lambda: [e for e in p.sim_events() if e["event"] == "accepted"] or None, 10,
        "sim log"))
    delivered_ids = {i for i, f in finals.items() if f["status"] == "delivered"}
    wait_for(lambda: delivered_ids <= {e.get("kmta_id") for e in p.sim_events()
                                       if e["event"] == "accepted"}, 10, "sim log flush")
    accepted = Counter(e.get("kmta_id") for e in p.sim_events() if e["event"] == "accepted")
    assert all(accepted[i] == 1 for i in delivered_ids)


def test_bad_input_goes_to_dlq_and_pipeline_goes_on(pipeline_factory) -> None:
    p = pipeline_factory()
    p.start(senders=1)
    p.produce_raw([
        b"not json at all",
        b"[1, 2, 3]",
        b'{"from": "a@kmta.test", "subject": "no recipient", "text": "x"}',
        b'{"id": "bad-crlf", "from": "a@kmta.test", "to": "x\\r\\nRCPT TO:<e@evil.test>@gmail.com",'
        b' "subject": "s", "text": "t"}',
        b'{"id": "bad-hdr", "from": "a@kmta.test", "to": "ok@gmail.com", "subject": "s\\r\\nBcc: '
        b'e@evil.test", "text": "t"}',
        b"\xff\xfe binary",
    ])
    ids = p.produce(messages(20, ["gmail.com"]))
    p.wait_finals(ids, timeout=90)
    dlq = wait_for(lambda: d if len(d := p.read_topic("dlq")) >= 6 else None, 30, "dlq")
    reasons = " | ".join(d["reason"] for d in dlq)
    assert "not JSON" in reasons and "not a JSON object" in reasons
    assert "to: Field required" in reasons
    assert "control characters" in reasons and "line break" in reasons
    originals = {d["original"] for d in dlq}
    assert "not json at all" in originals
    assert any(d["original_encoding"] == "base64" for d in dlq)
    finals = p.finals()
    assert finals["bad-crlf"]["status"] == "rejected"
    assert finals["bad-hdr"]["status"] == "rejected"
    # nothing reached the simulated providers for the bad messages
    rcpts = {e.get("recipient") for e in p.sim_events()}
    assert not any("evil" in (r or "") for r in rcpts)
