"""Issue 12, round 18: classes of replies that the blind part heldout22 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout22.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- our IP, host or account as the thing blocked: the spam words say why, not what the message is


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "Err K7: 198.51.100.4 is blocked from sending; it sent spam messages"),
        (554, "mail server 192.0.2.3 banned from sending: spam complaints"),
        (550, "connection from [203.0.113.7] rejected as a known spam source"),
        (550, "(5.2.1) connection from [198.51.100.9] refused spam host"),
    ],
)
def test_our_side_blocked_for_spam_in_other_words(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_block", "bounce", False)


def test_suspicious_activity_from_our_ip_defers_as_a_block() -> None:
    assert verdict(451, "temporary block: suspicious activity from your IP address 192.0.2.8") == (
        "spam_block",
        "defer",
        False,
    )


def test_a_spam_verdict_on_the_message_stays_content() -> None:
    # the limit of the class: the message judged, not our side
    assert verdict(550, "message blocked as spam by our filter")[0] == "spam_content"


# ---- the message over an allowed size, in words ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["Rejected: the message exceeded the allowed size", "mail exceeds the permitted message size"],
)
def test_exceeding_an_allowed_size_is_the_message(text: str) -> None:
    assert verdict(552, text) == ("message_too_large", "bounce", False)


def test_a_mailbox_over_its_allowed_size_stays_full() -> None:
    assert verdict(552, "mailbox has exceeded the allowed size")[0] == "mailbox_full"


# ---- relaying: a domain the gateway does not serve, relaying without authentication -----------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "Rejected: the recipient's domain is not a Filterco hosted domain"),
        (554, "relaying through this server without authentication is not allowed"),
    ],
)
def test_relaying_in_other_words(code: int, text: str) -> None:
    assert verdict(code, text) == ("relay_denied", "bounce", False)


# ---- Exchange's send-as refusal is our sender, not a policy ---------------------------------------


def test_send_as_denied_is_our_sender() -> None:
    assert verdict(554, "5.2.0 Submission failed: SendAsDeniedException; cannot submit") == (
        "bad_sender",
        "bounce",
        False,
    )


# ---- heldout22's second batch (scored blind on the rules above) ----------------------------------

# ---- the sender domain we may not use, a login that does not match our sender ------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "Sorry, you are not allowed to use the domain mail.example as a sender domain"),
        (554, "5.7.1 <r@example.org>: Recipient address rejected: Login bob and sender do not match"),
    ],
)
def test_our_sender_refused_in_other_words(code: int, text: str) -> None:
    assert verdict(code, text) == ("bad_sender", "bounce", False)


# ---- "recipient quota" under a policy or recipient-count code is a rate; under x.2.2 the mailbox ----


def test_recipient_quota_under_a_policy_code_defers_as_a_rate() -> None:
    assert verdict(452, "4.7.1 recipient quota reached for this sender, later") == (
        "rate_limit",
        "defer",
        False,
    )


def test_recipient_quota_under_a_mailbox_code_stays_the_mailbox() -> None:
    assert verdict(552, "5.2.2 recipient quota exceeded")[0] == "mailbox_full"


# ---- a recipient in a domain reserved for examples: the domain takes no mail --------------------


def test_reserved_recipient_domain_suppresses() -> None:
    assert verdict(501, "5.1.5 recipient address reserved for documentation") == (
        "bad_domain",
        "bounce",
        True,
    )
