"""Any bytes in, one answer out, on the real pipeline: hostile records interleaved with good
messages (kcat-like raw writes to the outbox) never stop routing or delivery. Every good message
is delivered once; every hostile record ends in the dead-letter topic (found by its outbox
partition and offset) or with one final event for its id; every process is alive at the end."""
from __future__ import annotations

import json
import random
from collections import Counter

from kmta.pipeline.kafkaio import make_producer
from tests.harness import run, wait_for

GOOD_DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "shop-example.test"]


def good(i: int) -> dict:
    return {"id": f"good-{i}", "from": "news@kmta.test",
            "to": f"user{i}@{GOOD_DOMAINS[i % len(GOOD_DOMAINS)]}", "subject": f"hello {i}",
            "text": f"body {i}\n"}


def hostile() -> list[tuple[str, bytes | None]]:
    base = {"from": "news@kmta.test", "to": "bad@gmail.com", "subject": "s", "text": "t"}

    def doc(**kw: object) -> bytes:
        return json.dumps({**base, **kw}).encode()
    deep = b"[" * 5000 + b"]" * 5000
    return [
        ("not json", b"this is not json"),
        ("empty bytes", b""),
        ("null record", None),
        ("array", b"[1, 2, 3]"),
        ("number", b"42"),
        ("deep nesting", deep),
        ("deep meta", doc(id="h-meta")[:-1] + b', "meta": ' + b'{"a": ' * 900 + b"1"
         + b"}" * 900 + b"}"),
        ("surrogate text", doc(id="h-sur1", text="a\ud800b")),
        ("surrogate subject", doc(id="h-sur2", subject="\udfff")),
        ("surrogate header", doc(id="h-sur3", headers={"X-A": "\ud83d"})),
        ("vertical tab header", doc(id="h-vt", subject="x\x0bBcc: victim@evil.test")),
        ("form feed header", doc(id="h-ff", headers={"X-B": "y\x0cBcc: victim@evil.test"})),
        ("control in header name", doc(id="h-name", headers={"X\x01Y": "v"})),
        ("non-ascii recipient", doc(id="h-uni", to="\u00fc@gmail.com")),
        ("nbsp recipient", doc(id="h-nbsp", to="a\u00a0b@gmail.com")),
        ("address literal", doc(id="h-lit", to="postmaster@[127.0.0.1]")),
        ("oversize", doc(id="h-big", text="x" * 200_000)),
        ("nul in data", json.dumps({"id": "h-nul", "from": "news@kmta.test",
                                    "to": "bad@gmail.com",
                                    "data": "Subject: x\r\n\r\na\x00b\r\n"}).encode()),
        ("bad id", doc(id="has spaces and / slashes")),
        ("binary", b"\xff\xfe\xfd\x00\x01"),
        ("dup of good-1", json.dumps(good(1)).encode()),
        ("dup of good-2", json.dumps({**good(2), "text": "other body"}).encode()),
    ]


def test_hostile_records_between_good_messages(pipeline_factory) -> None:
    # 4 ids in memory: the originals' ids are in the worker's ids file when their duplicates
    # come (kmta/pipeline/seenids.py)
    p = pipeline_factory(extra={"delivery": {"max_message_bytes": 100_000},
                                "worker": {"dedup_memory_ids": 4}})
    p.start(senders=2)
    rng = random.Random(7)
    goods = [(f"good-{i}", json.dumps(good(i)).encode()) for i in range(300)]
    bad = hostile()
    # the duplicates come after their originals; the rest anywhere in between
    stream: list[tuple[str, bytes | None, bool]] = [(n, v, True) for n, v in goods]
    for name, value in bad:
        lo = 10 if name.startswith("dup") else 0
        stream.insert(rng.randint(lo, len(stream)), (name, value, False))

    async def produce() -> dict[str, tuple[int, int]]:
        prod = make_producer(p.config)
        await prod.start()
        where: dict[str, tuple[int, int]] = {}
        try:
            for name, value, is_good in stream:
                # good ones keyed by id, hostile ones unkeyed (any partition), like a careless
                # producer: a duplicate may land on another partition than its original
                key = name.encode() if is_good or value is None else None
                md = await prod.send_and_wait(p.config.topic("outbox"), value, key=key)
                where[name] = (md.partition, md.offset)
        finally:
            await prod.stop()
        return where
    where = run(produce())

    good_ids = [n for n, _ in goods]
    finals = p.wait_finals(good_ids, timeout=240)
    assert Counter(f["status"] for f in finals.values()) == {"delivered": 300}

    def rid(value: bytes | None) -> str | None:
        try:
            return json.loads(value)["id"]  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - not a document with an id
            return None

    def accounted() -> dict[str, str] | None:
        dlq = {(d["partition"], d["offset"]): d["reason"] for d in p.read_topic("dlq")}
        fin = p.finals()
        out = {}
        for name, value in bad:
            if where[name] in dlq:
                out[name] = "dlq: " + dlq[where[name]]
            elif not name.startswith("dup") and (i := rid(value)) in fin:
                out[name] = f"final {fin[i]['status']}: {fin[i].get('response')}"
        return out if len(out) == len(bad) else None

    answers = wait_for(accounted, 120, "every hostile record in the DLQ or final")
    assert "duplicate id 'good-1'" in answers["dup of good-1"]
    assert "duplicate id 'good-2'" in answers["dup of good-2"]
    # the modules' own validation named every problem: no record needed the catch-all
    assert not [n for n, a in answers.items() if "internal error" in a], answers
    assert answers["non-ascii recipient"].startswith("final bounced") and "SMTPUTF8" in answers[
        "non-ascii recipient"]  # the simulated providers offer no SMTPUTF8 (RFC 6531)
    for name in ("nbsp recipient", "nul in data", "control in header name", "vertical tab header",
                 "form feed header", "surrogate text", "deep meta", "oversize", "bad id"):
        assert answers[name].startswith("dlq: invalid message"), (name, answers[name])
    events = p.results()
    per_id = Counter(e["id"] for e in events if e["final"])
    assert max(per_id.values()) == 1, [i for i, n in per_id.items() if n > 1]
    # the providers saw each good message once and no injected recipient
    wait_for(lambda: set(good_ids) <= {e.get("kmta_id") for e in p.sim_events()
                                       if e["event"] == "accepted"}, 30, "sim log")
    accepted = Counter(e.get("kmta_id") for e in p.sim_events() if e["event"] == "accepted")
    assert all(accepted[i] == 1 for i in good_ids)
    assert not any("evil" in (e.get("recipient") or "") for e in p.sim_events())
    for name in list(p.procs):
        assert p._alive(name)
    assert "routing a batch failed" not in p.log("worker")
