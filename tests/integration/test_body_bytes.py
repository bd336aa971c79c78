"""The body travels once, as bytes (schemas/envelope_codec.py), end to end: real broker, worker
and sender processes deliver 100 KB messages to an aiosmtpd server on loopback, which receives
exactly the bytes the router wrote to the queue; the queue records are binary and stored
lz4-compressed; a queue record of the old JSON form (from before an upgrade) is delivered too."""
from __future__ import annotations

import asyncio
import time

from schemas import Envelope, MxHost, envelope_codec
from sim.dns import DnsServerThread, Zone
from tests.harness import wait_for
from tests.kafka_batches import LZ4, read_values, stored_codecs
from tests.receiving import start_receiver


def raw_message(size: int) -> str:
    """A user's own RFC 5322 message (``data``): LF line ends (kmta writes CRLF), an 8-bit
    UTF-8 body, quotes and backslashes (escaped in JSON), lines SMTP must dot-stuff."""
    head = ("From: news@shop.example\nTo: ann@rcpt.test\nSubject: bytes\nMIME-Version: 1.0\n"
            "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n")
    lines, n = [], 0
    while n < size:
        line = (f'<p class="x{n}">Grüße \\ "{n}" – 8-bit text</p>\n' if n % 3 else
                f".{n} a line that starts with a dot\n")
        lines.append(line)
        n += len(line.encode())
    return head + "".join(lines)


def test_a_100_kb_message_arrives_byte_identical(pipeline_factory) -> None:
    p = pipeline_factory()
    zone = Zone(records={"rcpt.test": {"mx": [(10, "mx.rcpt.test")]},
                         "mx.rcpt.test": {"a": ["127.0.0.1"]}})
    data = raw_message(100_000)
    text = "".join(f"Zeile {i}: Grüße aus Köln, «newsletter» text\n" for i in range(2500))
    now = time.time()
    # written by the kmta before this one: the envelope as JSON, the body as text
    old = Envelope(id="old-1", sender="news@shop.example", rcpt="bob@rcpt.test",
                   domain="rcpt.test", isp="rcpt.test", accepted_at=now, routed_at=now,
                   data=data.replace("X", "Y").replace("\n", "\r\n").encode(),
                   mx=[MxHost(host="mx.rcpt.test", pref=10, ips=["127.0.0.1"])],
                   mx_resolved_at=now, mx_ttl=300)
    with DnsServerThread(zone, port=p.dns_port):
        ctrl, rec = start_receiver(p.smtp_port)
        try:
            p.start_worker()
            p.start_sender()
            ids = p.produce([
                {"id": "raw-1", "from": "news@shop.example", "to": "ann@rcpt.test",
                 "data": data},
                {"id": "txt-1", "from": "news@shop.example", "to": "cy@rcpt.test",
                 "subject": "Grüße", "text": text}])
            p.produce_raw_keyed("queue", b"rcpt.test", old.to_json())
            finals = p.wait_finals([*ids, "old-1"], timeout=120)
            wait_for(lambda: len(rec.got) >= 3, 30, "three messages at the receiver")
        finally:
            ctrl.stop()
    assert {i: f["status"] for i, f in finals.items()} == {
        "raw-1": "delivered", "txt-1": "delivered", "old-1": "delivered"}
    got = {g.rcpt: g.data for g in rec.got}
    assert len(rec.got) == 3

    # exactly the user's message (CRLF line ends), after kmta's trace header
    want_raw = ("X-Kmta-Id: raw-1\r\n" + data.replace("\n", "\r\n")).encode()
    assert len(want_raw) > 100_000
    assert got["ann@rcpt.test"] == want_raw
    assert got["bob@rcpt.test"] == old.data
    composed = got["cy@rcpt.test"]
    head, body = composed.split(b"\r\n\r\n", 1)
    assert b"Content-Transfer-Encoding: 8bit" in head  # not quoted-printable
    assert body == text.replace("\n", "\r\n").encode()
    assert finals["raw-1"]["size"] == len(want_raw)

    # the queue records: binary, the body exactly what arrived; batches stored lz4
    records = asyncio.run(read_values(p.config, p.config.topic("queue")))
    by_id = {envelope_codec.decode(v).id: v for v in records}
    assert set(by_id) == {"raw-1", "txt-1", "old-1"}
    for msg_id, rcpt in (("raw-1", "ann@rcpt.test"), ("txt-1", "cy@rcpt.test")):
        assert envelope_codec.is_binary(by_id[msg_id])
        assert by_id[msg_id].endswith(got[rcpt])
    assert not envelope_codec.is_binary(by_id["old-1"])
    for topic in ("queue", "outbox"):
        codecs = asyncio.run(stored_codecs(p.config, p.config.topic(topic)))
        assert codecs and set(codecs) == {LZ4}, (topic, codecs)
