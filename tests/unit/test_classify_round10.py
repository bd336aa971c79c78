"""Issue 12, round 10: classes of replies that the blind part heldout14 (and the older parts' last
hard-bounce misses) showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout14.jsonl, heldout3.jsonl, heldout4.jsonl, heldout10.jsonl and
heldout13.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- "excessive unknown recipients" is a block of our IP, whatever enhanced code follows: the
# ---- wording decides before the enhanced-code priors (a Yahoo-style "(#4.1.8)" names the sender
# ---- by RFC 3463, "(#4.4.5)" a congestion; the words say we probed for addresses) -------------

@pytest.mark.parametrize(
    ("code", "text"),
    [
        (451, "XX1-IP Excessive unknown recipients - possible Open Relay (#4.1.8)"),
        (451, "XX1-MF Excessive unknown recipients from your host (#4.4.5)"),
        (421, "4.7.0 excess invalid recipients, come back later"),
    ],
)
def test_excessive_unknown_recipients_is_a_temporary_block(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_block", "defer", False)


def test_excessive_unknown_recipients_as_a_5xx_bounces_without_suppressing() -> None:
    assert verdict(550, "5.7.1 Excessive invalid users from 192.0.2.9") == (
        "spam_block", "bounce", False)


# ---- the recipient in other words: "not our user", "does not handle mail for that user",
# ---- RFC 5321's 553 "mailbox name not allowed" in the form "mailbox is not allowed" ----------

@pytest.mark.parametrize(
    ("code", "text"),
    [
        (551, "not our user"),
        (550, "this host does not handle mail for that user"),
        (550, "Sorry, we don't accept mail for this address"),
        (553, "Recipient mailbox is not allowed"),
        (553, "mailbox name is not allowed here"),
    ],
)
def test_recipient_not_served_is_unknown(code: int, text: str) -> None:
    assert verdict(code, text) == ("bad_mailbox", "bounce", True)


def test_a_not_allowed_sender_mailbox_is_not_the_recipient() -> None:
    # the sender's wording still decides: no suppression for our own address
    category, _kind, suppress = verdict(553, "5.1.8 sender address rejected: mailbox not allowed")
    assert suppress is False
    assert category != "bad_mailbox"


# ---- a full mailbox said as "<account> does not have enough space" ---------------------------

@pytest.mark.parametrize(
    ("code", "kind", "text"),
    [
        (552, "bounce", "Account <someone@example.lv> does not have enough space"),
        (452, "defer", "the mailbox of this user doesn't have enough disk space"),
    ],
)
def test_not_enough_space_is_a_full_mailbox(code: int, kind: str, text: str) -> None:
    assert verdict(code, text) == ("mailbox_full", kind, False)
