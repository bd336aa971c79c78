"""judge(): the sender's decision for one reply, from the shipped knowledge base."""

from __future__ import annotations

import pytest

from kmta.policy.classify import Classifier
from kmta.policy.kb import KnowledgeBase
from kmta.policy.reply import Reply
from kmta.policy.speed import Signal
from kmta.policy.verdict import Disposition, judge

KB = KnowledgeBase.load()
CLS = Classifier.load()
GMAIL = KB.effective("gmail")


@pytest.mark.parametrize(("reply", "verdict", "category", "speed", "rule"), [
    (Reply(250, "2.0.0", "OK"), Disposition.DELIVERED, "delivered", Signal.CLEAN, None),
    (Reply(550, "5.1.1", "The email account that you tried to reach does not exist"),
     Disposition.BOUNCE, "bad_mailbox", Signal.CLEAN, None),
    (Reply(421, "4.7.0", "Our system has detected that this message is suspicious due to the "
                         "very low reputation of the sending domain"),
     Disposition.DEFER, "spam_block", Signal.LOCK, "gmail_low_reputation"),
    (Reply(421, "4.7.28", "Gmail has detected an unusual rate of unsolicited mail originating "
                          "from your IP address"),
     Disposition.DEFER, "rate_limit", Signal.THROTTLE, "gmail_428_ip_rate"),
    (Reply(550, "5.7.26", "This mail is unauthenticated"),
     Disposition.BOUNCE, "auth_failure", Signal.NEUTRAL, "gmail_unauthenticated"),
    (Reply(451, "4.3.0", "try again later"), Disposition.DEFER, None, None, None),
])
def test_gmail_replies(reply: Reply, verdict: Disposition, category: str | None,
                       speed: Signal | None, rule: str | None) -> None:
    v = judge(reply, CLS, GMAIL)
    assert v.verdict == verdict
    if category is not None:
        assert v.category == category
    if speed is not None:
        assert v.speed == speed
    assert v.rule == rule
    assert (v.action == "lock") is (rule == "gmail_low_reputation")


def test_kmtas_own_permanent_refusal_bounces_and_matches_no_provider_rule() -> None:
    v = judge(Reply(550, "5.7.0", "destination outside delivery.allowed_networks", True),
              CLS, GMAIL)
    assert v.verdict == Disposition.BOUNCE
    assert v.reply_rule is None or v.reply_rule.internal


def test_an_internal_timeout_defers() -> None:
    v = judge(Reply(451, "4.4.2", "timed out talking to mx", True), CLS, GMAIL)
    assert v.verdict == Disposition.DEFER


def test_the_verdict_equals_its_plain_string() -> None:
    assert Disposition.BOUNCE == "bounce" and Signal.THROTTLE == "throttle"


def test_no_rule_is_the_classifier_alone() -> None:
    v = judge(Reply(550, "5.1.1", "no such user"), CLS, None)
    assert v.verdict == Disposition.BOUNCE and v.action == "none" and v.rule is None
