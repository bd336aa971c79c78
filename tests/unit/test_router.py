"""The router (streams.router): one outbox record in, the records to write out.

Run against the shipped knowledge base and a resolver seam (a class answering ``mx(domain)``
from a table), with the clock passed in; no broker, no DNS server.
"""
from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime

import pytest

from kmta.config import Config
from kmta.pipeline.outputs import Out
from kmta.pipeline.resolver import MxResult, MxStatus
from kmta.pipeline.rules import partition_map
from kmta.policy.compose import TRACE_HEADER
from kmta.policy.kb import KnowledgeBase
from schemas import DeadLetter, DeliveryEvent, Envelope, MxHost, Status, envelope_codec
from streams.router import Router

NOW = 1_790_000_000.0
GMAIL_MX = [MxHost(host="gmail-smtp-in.l.google.com", pref=5, ips=["127.0.1.1"])]


class TableResolver:
    """MX answers from a table; unknown domains are NXDOMAIN. Records what was asked."""

    def __init__(self, answers: dict[str, MxResult]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def mx(self, domain: str) -> MxResult:
        self.asked.append(domain)
        return self.answers.get(domain, MxResult(MxStatus.NXDOMAIN, detail=f"{domain}: NX"))

    async def txt(self, name: str) -> list[str]:
        return []  # no MTA-STS anywhere

    async def addresses(self, host: str) -> list[str]:
        return []


ANSWERS = {
    "gmail.com": MxResult(MxStatus.OK, GMAIL_MX, ttl=300),
    "corp.example": MxResult(MxStatus.OK, [MxHost(host="aspmx.l.google.com", pref=1,
                                                  ips=["127.0.1.1"])], ttl=60),
    "shop.example": MxResult(MxStatus.OK, [MxHost(host="mx.shop.example", ips=["127.0.1.10"])],
                             ttl=60),
    "xn--bcher-kva.example": MxResult(MxStatus.OK, [MxHost(host="mx.xn--bcher-kva.example",
                                                           ips=["127.0.1.10"])], ttl=60),
    "nullmx.example": MxResult(MxStatus.NULL_MX, detail="nullmx.example: accepts no mail"),
    "noaddr.example": MxResult(MxStatus.NO_HOST, detail="noaddr.example: no MX, no A"),
    "flaky.example": MxResult(MxStatus.TEMPFAIL, detail="flaky.example: SERVFAIL"),
}


class Harness:
    def __init__(self, **config: object) -> None:
        self.config = Config.model_validate({
            "kafka": {"topic_prefix": "u."},
            "delivery": {"helo_name": "mta.kmta.test", "unsigned": "allow",
                         **config.pop("delivery", {})},
            "pools": [{"name": "default", "source_ips": ["127.0.0.2"]},
                      {"name": "bulk", "source_ips": ["127.0.0.3"]}],
            **config})
        self.kb = KnowledgeBase.load()
        self.pmap = partition_map(self.config, self.kb)
        self.resolver = TableResolver(ANSWERS)
        self.retried: list[Envelope] = []
        self.router = Router(self.config, self.kb, self.pmap, self.resolver,
                             {"suppressed@gmail.com": {}}, retry_first=self._retry,
                             clock=lambda: NOW)

    def _retry(self, env: Envelope, now: float) -> list[Out]:
        self.retried.append(env)
        return [Out("u.delay.5s", env.to_json(), env.isp.encode())]

    def route(self, doc: object, raw: bytes | None = None, offset: int = 7) -> list[Out]:
        value = raw if raw is not None else json.dumps(doc).encode()
        return asyncio.run(self.router.route(value, "u.outbox", 3, offset))


def msg(**fields: object) -> dict:
    return {"from": "news@shop.example", "to": "ann@gmail.com", "subject": "hi",
            "text": "hello\n", **fields}


def on(outs: list[Out], topic: str) -> list[Out]:
    return [o for o in outs if o.topic == f"u.{topic}"]


def events(outs: list[Out]) -> list[DeliveryEvent]:
    return [DeliveryEvent.model_validate_json(o.value) for o in on(outs, "results")]


def the_final(outs: list[Out]) -> DeliveryEvent:
    (ev,) = events(outs)
    assert ev.final
    return ev


@pytest.fixture
def h() -> Harness:
    return Harness()


# -- accepted messages -------------------------------------------------------------------------
def test_routed_to_the_isp_queue_partition_with_a_queued_event(h: Harness) -> None:
    outs = h.route(msg(id="m-1", campaign="spring", meta={"u": 1}))
    assert [o.topic for o in outs] == ["u.queue", "u.results", "u.ids"]
    q = outs[0]
    env = envelope_codec.decode(q.value)
    assert q.key == b"gmail"
    assert q.partition == h.pmap.partition_for("gmail", "m-1")
    assert q.partition in h.pmap.partitions_of("gmail")
    assert (env.id, env.sender, env.rcpt, env.domain, env.isp) == (
        "m-1", "news@shop.example", "ann@gmail.com", "gmail.com", "gmail")
    assert env.mx == GMAIL_MX and env.mx_ttl == 300 and env.mx_resolved_at == NOW
    assert env.accepted_at == env.routed_at == NOW and env.attempt == 0
    assert env.campaign == "spring" and env.meta == {"u": 1}
    assert env.pool == "default"  # named, though the message named none
    assert env.data.startswith(f"{TRACE_HEADER}: m-1\r\n".encode())
    assert b"Message-ID: <m-1@shop.example>" in env.data  # in the sender's domain
    assert env.crlf  # composed here: the senders skip their line-end check
    (ev,) = events(outs)
    assert outs[1].key == b"gmail"
    # the header the brain's consumer drops it by, undecoded (streams/committed.py)
    assert outs[1].headers == (("kmta-status", b"queued"),)
    assert q.headers is None and outs[2].headers is None
    assert (ev.id, ev.status, ev.final, ev.isp, ev.to) == (
        "m-1", Status.QUEUED, False, "gmail", "ann@gmail.com")
    assert ev.size == len(env.data) and ev.timestamp == NOW and ev.campaign == "spring"
    assert h.resolver.asked == ["gmail.com"]


def test_a_missing_id_is_generated(h: Harness) -> None:
    ids = {envelope_codec.decode(h.route(msg())[0].value).id for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) > 16 for i in ids)


def test_mx_rollup_and_unknown_domains(h: Harness) -> None:
    # a Google Workspace domain: its own name, Google's MX -> the gmail ISP
    env = envelope_codec.decode(h.route(msg(to="bob@corp.example"))[0].value)
    assert env.isp == "gmail" and env.domain == "corp.example"
    # an unknown domain is an ISP of its own, on a shared partition
    outs = h.route(msg(to="bob@shop.example", id="s-1"))
    env = envelope_codec.decode(outs[0].value)
    assert env.isp == "shop.example"
    assert outs[0].partition == h.pmap.partitions_of("shop.example")[0]
    assert h.pmap.dedicated_isp(outs[0].partition) is None


def test_idn_recipient_domain_is_routed_as_its_a_label(h: Harness) -> None:
    outs = h.route(msg(to="Ann@Bücher.example"))
    env = envelope_codec.decode(outs[0].value)
    assert env.rcpt == "Ann@xn--bcher-kva.example" and env.domain == "xn--bcher-kva.example"
    assert h.resolver.asked == ["xn--bcher-kva.example"]


@pytest.mark.parametrize(("pool", "named"), [(None, "default"), ("default", "default"),
                                             ("bulk", "bulk")])
def test_known_pools(h: Harness, pool: str | None, named: str) -> None:
    outs = h.route(msg(pool=pool) if pool else msg())
    assert envelope_codec.decode(outs[0].value).pool == named
    assert DeliveryEvent.model_validate_json(outs[1].value).pool == named


def test_data_message_passes_through(h: Harness) -> None:
    outs = h.route(msg(subject=None, text=None, id="d-1",
                       data="From: news@shop.example\nSubject: x\n\nbody\n"))
    env = envelope_codec.decode(outs[0].value)
    assert env.data == (f"{TRACE_HEADER}: d-1\r\n"
                        "From: news@shop.example\r\nSubject: x\r\n\r\nbody\r\n").encode()
    assert env.crlf  # its line ends made CRLF here


# -- decided without delivery ------------------------------------------------------------------
def test_expired_before_routing(h: Harness) -> None:
    for expires in (NOW - 1, NOW, datetime.fromtimestamp(NOW - 3600, UTC).isoformat()):
        outs = h.route(msg(id="e-1", expires_at=expires))
        ev = the_final(outs)
        assert [o.topic for o in outs] == ["u.results", "u.ids"]  # the id is taken
        assert outs[0].key == b"gmail" and ev.isp == "gmail"
        assert (ev.status, ev.code, ev.enhanced_code, ev.category, ev.internal) == (
            Status.EXPIRED, 554, "5.4.7", "expired", True)
    assert h.resolver.asked == []  # no lookup for a message that is over anyway


def test_not_yet_expired_carries_its_deadline(h: Harness) -> None:
    outs = h.route(msg(expires_at=NOW + 60))
    assert envelope_codec.decode(outs[0].value).expires_at == NOW + 60


def test_suppressed_recipient(h: Harness) -> None:
    ev = the_final(h.route(msg(to="Suppressed@Gmail.com", id="s-1")))
    assert (ev.status, ev.code, ev.category, ev.internal) == (
        Status.SUPPRESSED, 550, "suppressed", True)
    assert ev.isp == "gmail"  # a member domain of a known ISP, known without a lookup


@pytest.mark.parametrize(("domain", "code", "enhanced"), [
    ("nx.example", 550, "5.1.2"), ("nullmx.example", 556, "5.1.10"),
    ("noaddr.example", 550, "5.1.2")])
def test_domains_that_take_no_mail_bounce(h: Harness, domain: str, code: int,
                                          enhanced: str) -> None:
    outs = h.route(msg(to=f"bob@{domain}"))
    ev = the_final(outs)
    assert (ev.status, ev.code, ev.enhanced_code, ev.category, ev.internal) == (
        Status.BOUNCED, code, enhanced, "bad_domain", True)
    assert ev.isp == domain
    assert [o.headers for o in on(outs, "results")] == [None]  # an outcome: the brain's


def test_temporary_dns_failure_goes_to_the_retry_hook(h: Harness) -> None:
    outs = h.route(msg(to="bob@flaky.example", id="f-1"))
    assert [o.topic for o in outs] == ["u.delay.5s", "u.ids"]
    (env,) = h.retried
    assert env.id == "f-1" and env.attempt == 0 and env.isp == "flaky.example" and not env.mx


# -- rejected ----------------------------------------------------------------------------------
def rejected(outs: list[Out], rid: str | None) -> tuple[DeadLetter, DeliveryEvent | None]:
    dlq = on(outs, "dlq")
    assert len(dlq) == 1 and dlq[0].key is None
    dl = DeadLetter.model_validate_json(dlq[0].value)
    assert (dl.topic, dl.partition, dl.offset, dl.timestamp) == ("u.outbox", 3, 7, NOW)
    evs = events(outs)
    assert not on(outs, "queue")
    if rid is None:
        assert evs == []
        return dl, None
    (ev,) = evs
    assert (ev.id, ev.status, ev.final, ev.category, ev.internal) == (
        rid, Status.REJECTED, True, "invalid_message", True)
    assert ev.response == dl.reason and dl.id == rid
    return dl, ev


def test_oversize_message_is_rejected() -> None:
    h = Harness(delivery={"max_message_bytes": 2048})
    assert on(h.route(msg(text="x" * 1000)), "queue")
    dl, _ = rejected(h.route(msg(id="big-1", text="x" * 4000)), "big-1")
    assert "bytes; the limit is 2048" in dl.reason
    assert h.resolver.asked == ["gmail.com"]  # only for the one that fitted


def test_unknown_pool_is_rejected(h: Harness) -> None:
    dl, _ = rejected(h.route(msg(id="p-1", pool="nosuchpool")), "p-1")
    assert "unknown pool 'nosuchpool'" in dl.reason


@pytest.mark.parametrize(("doc", "reason"), [
    (msg(id="i-1", to="x\r\nRCPT TO:<e@evil.test>@gmail.com"), "control characters"),
    (msg(id="i-2", subject="s\r\nBcc: e@evil.test"), "line break"),
    (msg(id="i-3", headers={"Subject": "again"}), "set by kmta"),
    (msg(id="i-4", to="ann@straße.example"), "internationalized"),
    (msg(id="i-5", **{"from": "nobody"}), "from 'nobody'"),
    (msg(id="i-6", cc="x@y.example"), "cc: Extra inputs are not permitted"),
    (msg(id="i-7", text=None), "subject needs text and/or html"),
])
def test_invalid_messages_are_rejected_with_their_id(h: Harness, doc: dict, reason: str) -> None:
    dl, _ = rejected(h.route(doc), doc["id"])
    assert reason in dl.reason
    assert dl.original == json.dumps(doc)
    assert h.resolver.asked == []


def test_invalid_message_without_id_goes_to_the_dlq_only(h: Harness) -> None:
    dl, _ = rejected(h.route({"from": "a@shop.example", "subject": "no recipient", "text": "x"}),
                     None)
    assert "to: Field required" in dl.reason


@pytest.mark.parametrize(("raw", "reason", "original", "encoding"), [
    (b"not json", "not JSON", "not json", "utf-8"),
    (b"[1, 2]", "not a JSON object", "[1, 2]", "utf-8"),
    (b'"a string"', "not a JSON object", '"a string"', "utf-8"),
    (b"\xff\xfe binary", "not JSON", base64.b64encode(b"\xff\xfe binary").decode(), "base64"),
])
def test_unreadable_records_go_to_the_dlq(h: Harness, raw: bytes, reason: str, original: str,
                                          encoding: str) -> None:
    dl, _ = rejected(h.route(None, raw=raw), None)
    assert dl.reason.startswith(reason)
    assert (dl.original, dl.original_encoding) == (original, encoding)


def test_empty_record_goes_to_the_dlq(h: Harness) -> None:
    outs = asyncio.run(h.router.route(None, "u.outbox", 3, 7))
    dl, _ = rejected(outs, None)
    assert dl.reason == "empty record" and dl.original == ""


class FakeSts:
    """MTA-STS answers from a table (the real lookup: tests/integration/test_mta_sts.py)."""

    def __init__(self, policies: dict) -> None:
        self.policies = policies
        self.asked: list[tuple[str, float]] = []

    async def enforced(self, domain: str, now: float):
        self.asked.append((domain, now))
        return self.policies.get(domain)


def test_mta_sts_enforce_policy_is_stamped_on_the_envelope() -> None:
    from schemas import TlsPolicy
    h = Harness()
    sts = FakeSts({"gmail.com": TlsPolicy(mx=["*.google.com"], id="x1")})
    h.router = Router(h.config, h.kb, h.pmap, h.resolver, {}, retry_first=h._retry,
                      clock=lambda: NOW, mta_sts=sts)
    env = envelope_codec.decode(h.route(msg())[0].value)
    assert env.tls_policy == TlsPolicy(mx=["*.google.com"], id="x1")
    other = envelope_codec.decode(h.route(msg(to="a@shop.example"))[0].value)
    assert other.tls_policy is None
    assert sts.asked == [("gmail.com", NOW), ("shop.example", NOW)]


def test_unsigned_mail_is_refused_by_default() -> None:
    h = Harness(delivery={"unsigned": "refuse"})
    outs = h.route(msg(id="u-1"))
    (ev,) = events(outs)
    assert ev.status is Status.REJECTED and "delivery.unsigned" in ev.response
    assert ev.category == "unsigned"
    assert not any(o.topic == "u.queue" for o in outs)


def test_a_released_retry_with_stale_mx_gets_the_current_mta_sts_policy() -> None:
    """The delay scheduler resolves a stale MX again and, with it, the MTA-STS policy (a
    message first routed while DNS failed had none)."""
    import random

    from schemas import TlsPolicy
    from streams.delay import DelayScheduler

    class NoStates:
        values: dict = {}  # noqa: RUF012 - one shared mapping is the point

    h = Harness()
    sts = FakeSts({"gmail.com": TlsPolicy(mx=["*.google.com"])})
    h.router = Router(h.config, h.kb, h.pmap, h.resolver, {}, retry_first=h._retry,
                      clock=lambda: NOW, mta_sts=sts)
    delay = DelayScheduler(h.config, h.kb, h.pmap, h.resolver, NoStates(), random.Random(1))
    delay.router = h.router
    env = Envelope(id="r1", sender="a@shop.example", rcpt="ann@gmail.com", domain="gmail.com",
                   isp="gmail", data="x", accepted_at=NOW - 100, routed_at=NOW - 100)
    outs = asyncio.run(delay._release(env, NOW))
    queued = envelope_codec.decode(on(outs, "queue")[0].value)
    assert queued.mx and queued.tls_policy == TlsPolicy(mx=["*.google.com"])
    assert sts.asked == [("gmail.com", NOW)]


def test_ids_records_carry_the_worker_s_own_header_and_its_ids_are_kept_at_once() -> None:
    """The worker's ids view skips the ids records its own router wrote (streams/app.py): the
    router must have kept each such id itself, and mark every ids record it writes, also the
    one of a refused message with an id."""
    from kmta.pipeline.seenids import SeenIds
    from kmta.policy.dedup import decode_seen

    h = Harness()
    own = ("kmta-writer", b"w1.abc")
    seen = SeenIds()
    h.router = Router(h.config, h.kb, h.pmap, h.resolver, {}, retry_first=h._retry,
                      clock=lambda: NOW, seen=seen, ids_header=own)
    routed = h.route(msg(id="own-1"), offset=11)
    refused = h.route(msg(id="own-2", to="not an address"), offset=12)
    for rid, outs in (("own-1", routed), ("own-2", refused)):
        (rec,) = [o for o in outs if o.topic == "u.ids"]
        assert rec.headers == (own,) and rec.key == rid.encode()
        assert seen.get(rid) == decode_seen(rec.value)  # what the view would have stored
    assert [o.headers for o in Harness().route(msg(id="x-1")) if o.topic == "u.ids"] == [None]
