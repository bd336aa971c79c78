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


# ---- part 30's misses, by wording classes -------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (552, "Estimated message length 31457280 exceeds limit of 10485760"),
        (552, "5.3.4 Message size 2000000 exceeds the allowed maximum"),
    ],
)
def test_size_before_the_verb_is_message_size(code: int, text: str) -> None:
    assert verdict(code, text) == ("message_too_large", "bounce", False)


def test_invalid_hostname_alone_is_our_helo_name() -> None:
    assert verdict(554, "invalid hostname") == ("reverse_dns", "bounce", False)


def test_invalid_host_name_of_a_recipient_address_is_not_our_name() -> None:
    assert verdict(553, "5.1.2 <r@example..org>... Invalid host name")[0] != "reverse_dns"


@pytest.mark.parametrize(
    "text",
    ["Cannot receive from specified address <s@example.org>: Sender not acceptable",
     "5.7.1 Unacceptable sender"],
)
def test_sender_not_acceptable_is_our_sender(text: str) -> None:
    assert verdict(550, text) == ("bad_sender", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "Cannot receive for specified address"),
        (550, "5.1.1 Cannot accept mail for this recipient"),
        (501, "r: recipient address must contain a domain"),
    ],
)
def test_recipient_nobody_serves_or_malformed_is_bad_mailbox(code: int, text: str) -> None:
    assert verdict(code, text) == ("bad_mailbox", "bounce", True)


def test_cannot_accept_mail_for_a_domain_is_not_an_unknown_user() -> None:
    assert verdict(550, "Cannot accept mail for this domain")[0] != "bad_mailbox"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (552, "Message too small"),
        (554, "Format restriction violation. Email Session ID: {0000-1-AAAA}"),
    ],
)
def test_form_refusals_are_policy(code: int, text: str) -> None:
    assert verdict(code, text) == ("policy", "bounce", False)


def test_domain_owner_policy_is_dmarc() -> None:
    text = ("5.7.0 (XXX000-MC1F00) Unfortunately, messages from (192.0.2.1) on behalf of "
            "(example.com) could not be delivered due to domain owner policy restrictions.")
    assert verdict(550, text) == ("auth_failure", "bounce", False)


def test_rejected_by_this_user_is_the_recipients_block() -> None:
    assert verdict(550, "Your message was rejected by this user and was not delivered") == (
        "policy", "bounce", False)


@pytest.mark.parametrize(("code", "text"), [(550, "Internal server error"), (500, "Internal Server Error")])
def test_bare_internal_error_under_5xx_is_permanent(code: int, text: str) -> None:
    assert verdict(code, text) == ("other_permanent", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (451, "Internal server error"),
        (554, "Error: Cannot accept your message due to internal error, please report that"),
    ],
)
def test_internal_error_with_more_words_or_4xx_stays_temporary(code: int, text: str) -> None:
    assert verdict(code, text)[0] == "other_temporary"


# ---- part 30's second batch ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["Limit of 100 recipients exceeded", "5.5.3 Limit of 50 rcpts reached"]
)
def test_recipient_limit_named_first_defers_even_as_552(text: str) -> None:
    assert verdict(552, text) == ("rate_limit", "defer", False)


@pytest.mark.parametrize(
    "text", ["Bad origin address syntax", "5.1.7 Invalid return-path address"]
)
def test_bad_origin_address_is_our_sender(text: str) -> None:
    assert verdict(501, text) == ("bad_sender", "bounce", False)


def test_bad_recipient_address_syntax_stays_the_recipient() -> None:
    assert verdict(501, "Bad recipient address syntax") == ("bad_mailbox", "bounce", True)
