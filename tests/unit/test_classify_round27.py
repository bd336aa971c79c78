"""Issue 12, round 27: part 29's blind misses (provider bounces quoted in issue threads).

A recipient the receiver knows to bounce (or has listed as invalid / undeliverable) is an address
that takes no mail, before the "policy" word the same reply carries; a sender "known to bounce"
stays ours. Microsoft's "temporarily rate limited due to IP reputation" (4.7.650 / 4.7.651) is
`rate_limit` whether or not the ISP is recognised (one convention, docs/operations/classify.md
"Rate limited for reputation"); a reply that says the IP is deferred for complaints without a
rate stays `spam_block`. Made-up texts (placeholder names and documentation addresses).
"""

from __future__ import annotations

import pytest

from kmta.policy.kb import KnowledgeBase
from kmta.policy.reply import Reply
from kmta.policy.verdict import explain
from tests.unit.classify_rounds import CLASSIFIER, verdict

KB = KnowledgeBase.load()

# ---- a recipient known to bounce: the address takes no mail ------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "5.7.1 <r@example.org>: Recipient address rejected: policy rejection: "
              "r@example.org: recipient is known to bounce"),
        (550, "Recipient address is known to be invalid"),
        (550, "5.7.1 Address flagged as undeliverable by local policy"),
        (550, "Mailbox r@example.org listed as bouncing"),
        (550, "Rejected: known bad recipient"),
    ],
)
def test_recipient_known_to_bounce_is_bad_mailbox(code: int, text: str) -> None:
    assert verdict(code, text) == ("bad_mailbox", "bounce", True)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (553, "5.1.7 Sender address rejected: address is known to bounce"),
        (550, "Sender <s@example.org> is known to bounce"),
    ],
)
def test_sender_known_to_bounce_keeps_the_recipient(code: int, text: str) -> None:
    category, _, suppress = verdict(code, text)
    assert category != "bad_mailbox"
    assert suppress is False


def test_known_to_bounce_under_4xx_defers() -> None:
    assert verdict(450, "4.7.1 recipient is known to bounce, try again later")[1:] == ("defer", False)


# ---- rate limited for IP reputation: rate_limit, with or without the ISP -------------------------

REPUTATION_RATE = (
    "4.7.651 The mail server [203.0.113.5] has been temporarily rate limited due to IP reputation. "
    "For e-mail delivery information, see https://postmaster.live.com (S844) "
    "[XX1NAM00FT000.eop-nam00.prod.protection.outlook.com 2023-01-01T00:00:00.000Z 08DB0000]"
)


@pytest.mark.parametrize("isp", [None, "outlook"])
def test_rate_limited_due_to_ip_reputation_is_rate_limit(isp: str | None) -> None:
    _, v = explain(Reply.parse(451, REPUTATION_RATE), CLASSIFIER, KB, isp)
    assert (v.category, v.verdict, v.suppress) == ("rate_limit", "defer", False)
    assert v.action in ("throttle", "lock")
    assert v.scope == "source_ip"


def test_default_rule_throttles_reputation_rate_limit() -> None:
    _, v = explain(Reply.parse(451, REPUTATION_RATE), CLASSIFIER, KB, None)
    assert (v.rule, v.action) == ("ip_reputation_rate_limited", "throttle")


def test_microsoft_reputation_code_alone_is_rate_limit() -> None:
    assert verdict(451, "4.7.651 The mail server [203.0.113.5] (S3114)") == (
        "rate_limit", "defer", False)


def test_deferred_for_complaints_stays_spam_block() -> None:
    text = ("4.7.0 [TSS04] Messages from 203.0.113.9 temporarily deferred due to user complaints - "
            "4.16.55.1; see https://help.yahoo.com/kb/postmaster/SLN3434.html")
    _, v = explain(Reply.parse(421, text), CLASSIFIER, KB, None)
    assert (v.category, v.verdict, v.rule) == ("spam_block", "defer", "generic_deferral")


def test_permanent_microsoft_ban_stays_spam_block() -> None:
    assert verdict(550, "5.7.650 Access denied, banned sending IP [203.0.113.5]")[0] == "spam_block"
