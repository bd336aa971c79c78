"""Issue 12, round 21: Postfix's "Sender / Recipient address rejected:" prefix as one rule.

Round 20's families study found seven blind misses where the prefix outweighed the reason after
it; rounds 12-18 fixed them case by case. The classifier now reads the words after the prefix on
their own first (the reason decides, the prefix only says whose address it is) and falls back to
the whole line only when they match no specific rule. After "Sender address rejected:" a reason
that names an address's state is our sender's, never a recipient's. Made-up texts (placeholder
names); each asserts the category, bounce or defer, and whether the recipient is suppressed.
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- the sender prefix: an address's state is our sender's (mailbox_full before this round) --------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "5.7.1 <s@example.org>: Sender address rejected: user over quota"),
        (554, "5.7.1 <s@example.org>: Sender address rejected: mailbox is full"),
        (550, "5.1.0 <s@example.org>: Sender address rejected: Mailbox quota exceeded"),
        (550, "5.7.1 <s@example.org>: Sender address rejected: account has expired"),
        (550, "5.1.0 <s@example.org>: Sender address rejected: User unknown in local recipient table"),
        (550, "5.7.1 <s@example.org>: Sender address rejected: no MX for sender domain"),
        (550, "5.7.1 <s@example.org>: Sender address rejected: disabled"),
    ],
)
def test_address_state_after_the_sender_prefix_is_our_sender(code: int, text: str) -> None:
    assert verdict(code, text) == ("bad_sender", "bounce", False)


# ---- the sender prefix: a named cause on our side keeps its class ------------------------------------


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("5.7.1 <s@example.org>: Sender address rejected: SPF fail", "auth_failure"),
        ("5.7.1 <s@example.org>: Sender address rejected: listed at dbl.spamhaus.org", "spam_block"),
        ("5.7.1 <s@example.org>: Sender address rejected: Blocked due to spam", "spam_block"),
    ],
)
def test_sender_prefix_named_cause(text: str, category: str) -> None:
    assert verdict(554, text) == (category, "bounce", False)


# ---- the recipient prefix: the reason decides, whatever the enhanced code --------------------------


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "5.1.1 <r@example.net>: Recipient address rejected: Message contains a virus",
         ("spam_content", "bounce", False)),
        (550, "5.1.1 <r@example.net>: Recipient address rejected: Mailbox full",
         ("mailbox_full", "bounce", False)),
        (550, "5.1.1 <r@example.net>: Recipient address rejected: Message too large",
         ("message_too_large", "bounce", False)),
        (550, "5.1.1 <r@example.net>: Recipient address rejected: Relaying denied",
         ("relay_denied", "bounce", False)),
        (550, "5.1.1 <r@example.net>: Recipient address rejected: too many messages per hour",
         ("rate_limit", "defer", False)),
        (450, "4.7.1 <r@example.net>: Recipient address rejected: greylisted, sender must retry",
         ("greylist", "defer", False)),
        (554, "5.7.1 <r@example.net>: Recipient address rejected: user unknown",
         ("bad_mailbox", "bounce", True)),
    ],
)
def test_recipient_prefix_reason_decides(code: int, text: str,
                                         expected: tuple[str, str, bool]) -> None:
    assert verdict(code, text) == expected


# ---- the prefix alone: generic or no reason, the whole line decides as before ------------------------


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "5.1.1 <r@example.net>: Recipient address rejected: example.net",
         ("bad_mailbox", "bounce", True)),
        (554, "5.7.1 <r@example.net>: Recipient address rejected: Access denied",
         ("policy", "bounce", False)),
        (554, "5.7.1 <r@example.net>: Recipient address rejected: Not in recipient list",
         ("bad_mailbox", "bounce", True)),
        (554, "5.7.1 <s@example.org>: Sender address rejected: Access denied",
         ("bad_sender", "bounce", False)),
    ],
)
def test_prefix_alone_keeps_the_whole_line(code: int, text: str,
                                           expected: tuple[str, str, bool]) -> None:
    assert verdict(code, text) == expected


# ---- part 24's second batch: a filter named by its kind (no provider's code) -----------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.7.1 Message rejected by DCC: bulk count too high"),
        (451, "4.7.1 Refused per Razor2 check"),
        (554, "5.7.1 Rejected via Pyzor check"),
        (550, "5.7.0 Bulk content checksum matched, message refused"),
    ],
)
def test_content_checksum_filters_judge_the_message(code: int, text: str) -> None:
    category, _, suppress = verdict(code, text)
    assert (category, suppress) == ("spam_content", False)


@pytest.mark.parametrize(
    "text",
    [
        "4.7.1 Intrusion prevention active for [192.0.2.7]",
        "4.7.0 intrusion detection system triggered, try later",
    ],
)
def test_intrusion_prevention_blocks_our_side(text: str) -> None:
    assert verdict(421, text) == ("spam_block", "defer", False)


def test_a_checksum_word_alone_is_no_content_verdict() -> None:
    # "dcc" inside a host or account name is no filter
    assert verdict(550, "5.1.1 <dccuser@example.net>: Recipient address rejected: User unknown")[0] \
        == "bad_mailbox"
