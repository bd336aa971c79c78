"""Issue 12, round 12: classes of replies that the blind part heldout16 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout16.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- relaying refused in qmail-style words ("we don't relay", "not allowed to be relayed thru
# ---- this MTA"): relay_denied, not a generic 5.7.1 policy nor an unknown permanent failure ------


@pytest.mark.parametrize(
    "text",
    [
        "sorry, we don't relay for that domain (#5.7.1)",
        "that recipient is not allowed to be relayed thru this MTA",
        "mail for example.net isn't allowed to be relayed through this server without login",
    ],
)
def test_qmail_style_relay_refusals_are_relay_denied(text: str) -> None:
    assert verdict(553, text) == ("relay_denied", "bounce", False)


# ---- a ceiling said as "no more than N ...": recipients per message are a rate (RFC 5321
# ---- 4.5.3.1.10's too-many-recipients, retried later), bytes are the message's size; a
# ---- throttling quota is our sending rate, not the recipient's storage quota ----------------


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 No more than 50 recipients per message, please",
        "5.7.1 at most 10 rcpts accepted in one transaction",
        "5.7.1 sorry, a maximum of 100 recipients is allowed here",
    ],
)
def test_recipient_ceiling_is_a_rate_that_defers(text: str) -> None:
    assert verdict(551, text) == ("rate_limit", "defer", False)


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 No more than 10 MB please",
        "5.7.1 we take at most 2048 kilobytes per message",
        "5.7.1 up to 5.5 MiB accepted",
    ],
)
def test_size_ceiling_is_message_too_large(text: str) -> None:
    assert verdict(552, text) == ("message_too_large", "bounce", False)


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 <someone@example.org>: Recipient address rejected: Throttling quota exceeded",
        "4.7.1 throttling quota exceeded for this client, back off",
    ],
)
def test_throttling_quota_is_a_rate_not_a_full_mailbox(text: str) -> None:
    category, verdict_, suppress = verdict(554, text)
    assert (category, verdict_, suppress) == ("rate_limit", "defer", False)


# ---- a full mailbox said without a code ("has reached its maximum allowed size"); the
# ---- receiver's own disk ("No space left on device", ENOSPC) is its trouble, not the mailbox -


@pytest.mark.parametrize(
    "text",
    [
        "The recipient's mailbox has reached its maximum allowed size",
        "this user's inbox has hit its maximum size",
        "Mailbox of that account has exceeded the allowed quota",
    ],
)
def test_codeless_mailbox_size_reached_is_mailbox_full(text: str) -> None:
    assert verdict(552, text) == ("mailbox_full", "bounce", False)


def test_no_space_left_on_device_is_the_receivers_trouble() -> None:
    assert verdict(451, "4.3.0 write failed: No space left on device") == (
        "other_temporary", "defer", False)
