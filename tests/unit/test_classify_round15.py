"""Issue 12, round 15: classes of replies that the blind part heldout19 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout19.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- connections too frequent, a credit quota used up, "exceeded the max ... per hour": a rate --


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (450, "too frequent connects from 203.0.113.9, please retry later"),
        (421, "4.7.0 you connect too often, come back later"),
        (451, "Authentication failed: sending credits exhausted for today"),
        (550, "Host <mx.sender.example> has exceeded the max messages and bounces per hour (90/90)"),
    ],
)
def test_connection_or_credit_ceiling_is_a_rate(code: int, text: str) -> None:
    assert verdict(code, text) == ("rate_limit", "defer", False)


# ---- the address we send as, refused as not ours to use: our sender, never the recipient ----------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (551, "5.7.1 Not authorized to send from this header address"),
        (553, "Relaying disallowed as <robot@sender.example>"),
        (554, "5.1.8 Sender Address Blocked"),
        (550, "no access for this sender"),
        (451, "From: domain must resolve"),
    ],
)
def test_sending_as_an_address_we_may_not_use_is_our_sender(code: int, text: str) -> None:
    category, _, suppress = verdict(code, text)
    assert (category, suppress) == ("bad_sender", False)


def test_sender_address_blocked_without_a_sender_code_stays_a_block() -> None:
    # Mimecast's Blocked Senders policy on the connecting IP: no x.1.x code, so not our address.
    assert verdict(421, "Sender address blocked")[0] != "bad_sender"


# ---- our IP, domain or account refused in other words: a block of our side -------------------------


@pytest.mark.parametrize(
    "text",
    [
        "no access for this ip",
        "Sorry, no access from your network",
        "5.7.1 FILTERX you are permanently blocked on this server",
        "5.4.6 Unusual sending activity detected on your account",
        "5.7.1 [ABC] unusual amount of spam mail originating from your account",
    ],
)
def test_our_side_refused_in_other_words_is_a_block(text: str) -> None:
    assert verdict(550, text) == ("spam_block", "bounce", False)


def test_gmail_unusual_rate_stays_a_rate() -> None:
    text = (
        "4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your"
        " IP address. Mail sent from your IP address has been temporarily rate limited."
    )
    assert verdict(421, text) == ("rate_limit", "defer", False)


# ---- a header said to hold characters it may not: the message's form ------------------------------


@pytest.mark.parametrize(
    "text", ["Subject contains invalid characters", "Reply-To field contains illegal characters"]
)
def test_header_with_invalid_characters_is_the_form(text: str) -> None:
    assert verdict(550, text) == ("policy", "bounce", False)
