"""The ISP of a feedback event's recipient domain (kmta/pipeline/feedbackisp.py): member
domains without DNS, other domains by MX rollup, a failed, slow or absent lookup falling back to
the domain itself; and the inbound processor asking each distinct domain of a batch once."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from inbound.processor import Processor
from kmta.config import Config
from kmta.pipeline.feedbackisp import (
    FAILED,
    INVALID,
    MEMBER,
    MX,
    NO_MX,
    FeedbackIsps,
    isp_of,
    plan,
)
from kmta.pipeline.resolver import MxResult, MxStatus
from kmta.policy.classify import Classifier
from kmta.policy.kb import KnowledgeBase
from schemas import DeliveryEvent, InboundMail, MxHost

KB = KnowledgeBase.load()


def ok(*hosts: str) -> MxResult:
    return MxResult(MxStatus.OK, [MxHost(host=h, pref=10 * i, ips=["127.0.0.1"])
                                  for i, h in enumerate(hosts)], ttl=300)


class FakeResolver:
    """Answers from a table; ``hang`` names never answer, ``boom`` names raise."""

    def __init__(self, answers: dict[str, MxResult], hang: set[str] = frozenset(),
                 boom: set[str] = frozenset()) -> None:
        self.answers, self.hang, self.boom = answers, hang, boom
        self.asked: list[str] = []

    async def mx(self, domain: str) -> MxResult:
        self.asked.append(domain)
        if domain in self.hang:
            await asyncio.Event().wait()
        if domain in self.boom:
            raise RuntimeError("resolver bug")
        return self.answers.get(domain, MxResult(MxStatus.NXDOMAIN, detail="NXDOMAIN"))


def test_plan_member_domains_skip_dns_and_names_are_made_ascii() -> None:
    known, lookup = plan(KB, ["gmail.com", "Yahoo.com", "corp.example", "bücher.example",
                              "not a domain", "x"])
    assert known == {"gmail.com": ("gmail", MEMBER), "Yahoo.com": ("yahoo", MEMBER),
                     "not a domain": ("not a domain", INVALID), "x": ("x", INVALID)}
    assert lookup == {"corp.example": "corp.example",
                      "bücher.example": "xn--bcher-kva.example"}


@pytest.mark.parametrize(("result", "expected"), [
    (ok("aspmx.l.google.com", "alt1.aspmx.l.google.com"), ("gmail", MX)),
    (ok("corp-example.mail.protection.outlook.com"), ("outlook", MX)),
    (ok("mx.yandex.net"), ("yandex", MX)),
    (ok("mx1.corp.example"), ("corp.example", MX)),  # its own mail server: its own ISP
    (MxResult(MxStatus.TEMPFAIL, detail="SERVFAIL"), ("corp.example", FAILED)),
    (None, ("corp.example", FAILED)),  # raised or timed out
    (MxResult(MxStatus.NXDOMAIN), ("corp.example", NO_MX)),
    (MxResult(MxStatus.NULL_MX), ("corp.example", NO_MX)),
])
def test_isp_of_rolls_up_by_mx_or_falls_back_to_the_domain(
        result: MxResult | None, expected: tuple[str, str]) -> None:
    assert isp_of(KB, "corp.example", result) == expected


async def test_resolve_asks_each_domain_once_and_bounds_the_wait() -> None:
    r = FakeResolver({"corp.example": ok("aspmx.l.google.com"),
                      "shop.example": ok("mx.yandex.net"),
                      "broken.example": MxResult(MxStatus.TEMPFAIL, detail="SERVFAIL")},
                     hang={"slow.example"}, boom={"bug.example"})
    isps = FeedbackIsps(KB, r, timeout=0.3)
    t0 = time.monotonic()
    got = await isps.resolve(["corp.example", "corp.example", "gmail.com", "shop.example",
                              "broken.example", "slow.example", "bug.example",
                              "gone.example"])
    took = time.monotonic() - t0
    assert got == {"corp.example": "gmail", "gmail.com": "gmail", "shop.example": "yandex",
                   "broken.example": "broken.example", "slow.example": "slow.example",
                   "bug.example": "bug.example", "gone.example": "gone.example"}
    assert sorted(r.asked) == ["broken.example", "bug.example", "corp.example",
                               "gone.example", "shop.example", "slow.example"]
    assert 0.3 <= took < 2.0  # the hung lookup cost the deadline, no more
    assert isps.counts == {MEMBER: 1, MX: 2, FAILED: 3, NO_MX: 1}


async def test_resolve_with_nothing_to_look_up_asks_nobody() -> None:
    r = FakeResolver({})
    assert await FeedbackIsps(KB, r, timeout=0.3).resolve(["gmail.com", "bad name"]) == {
        "gmail.com": "gmail", "bad name": "bad name"}
    assert r.asked == []


@dataclass
class Rec:
    value: bytes | None
    topic: str = "t.inbound"
    partition: int = 0
    offset: int = 0


def arf(rcpt: str, msg_id: str) -> bytes:
    return (f"From: fbl@isp.test\r\nTo: fbl@bounces.shop.test\r\nSubject: complaint\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/report; "
            f'report-type=feedback-report; boundary="b"\r\n\r\n--b\r\n'
            f"Content-Type: text/plain\r\n\r\nabuse report\r\n--b\r\n"
            f"Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
            f"User-Agent: TestFBL/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: <{rcpt}>\r\n\r\n"
            f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nX-Kmta-Id: {msg_id}\r\n"
            f"Subject: sale\r\n\r\n--b--\r\n").encode()


def record(rcpt: str, msg_id: str) -> bytes:
    return InboundMail.of(arf(rcpt, msg_id), mail_from="fbl@isp.test",
                          rcpt=["fbl@bounces.shop.test"], received_at=1.0).to_json()


async def test_processor_batch_one_lookup_per_domain() -> None:
    config = Config.model_validate({})  # tied by X-Kmta-Id: no VERP secret needed
    r = FakeResolver({"corp.example": ok("aspmx.l.google.com")},
                     boom={"bug.example"})
    p = Processor(config, KB, Classifier.load(), None, "n1", FeedbackIsps(KB, r, 0.5))
    outs = await p.outs_for([Rec(record("ann@corp.example", "m1")),
                             Rec(record("bob@CORP.example", "m2"), offset=1),
                             Rec(record("cat@bug.example", "m3"), offset=2),
                             Rec(record("dan@gmail.com", "m4"), offset=3),
                             Rec(b"not json", offset=4)], now=2.0)
    events = [DeliveryEvent.model_validate_json(o.value) for o in outs
              if o.topic == config.topic("results")]
    assert {e.id: (e.status, e.isp, e.domain) for e in events} == {
        "m1": ("complaint", "gmail", "corp.example"),
        "m2": ("complaint", "gmail", "corp.example"),
        "m3": ("complaint", "bug.example", "bug.example"),
        "m4": ("complaint", "gmail", "gmail.com")}
    assert sorted(r.asked) == ["bug.example", "corp.example"]
    assert [o.topic for o in outs].count(config.topic("dlq")) == 1
    assert p.counts == {"complaint": 4, "dead_letter": 1}
