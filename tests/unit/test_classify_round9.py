"""Issue 12, round 9: classes of replies that the blind part heldout13 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout13.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- unknown recipients in the wording of Chinese hosts (Coremail "unavailable mail user",
# ---- "not user of this server", a misspelt "does no exists") --------------------------------

@pytest.mark.parametrize(
    "text",
    [
        "#1200431 unavailable mail user",
        "not user of this server",
        "not a user of this system: someone@example.cn",
        "QX:07 The account you wrote to does no exists",
        "the mailbox does no exist here",
    ],
)
def test_unknown_recipient_wordings(text: str) -> None:
    assert verdict(550, text) == ("bad_mailbox", "bounce", True)


def test_user_unavailable_for_now_is_not_unknown() -> None:
    # the words in the other order, with a 4xx, are not an unknown address
    category, kind, suppress = verdict(450, "4.2.0 mailbox unavailable, try later")
    assert (kind, suppress) == ("defer", False)
    assert category != "bad_mailbox"


# ---- an address named and said to be disabled is the recipient's account --------------------

@pytest.mark.parametrize(
    "text",
    [
        "someone@example.net is now disabled with SMTP service.",
        "<a.person@example.org> has been suspended",
        "box@example.com was deactivated",
    ],
)
def test_address_disabled_is_inactive(text: str) -> None:
    assert verdict(550, text) == ("inactive_mailbox", "bounce", False)


# ---- our IP refused in so many words; a sender the server calls fake -------------------------

@pytest.mark.parametrize(
    "text",
    ["Requested mail action not taken: Invalid IP", "IP is rejected", "your IP address is refused"],
)
def test_ip_refused_is_a_block(text: str) -> None:
    assert verdict(550, text) == ("spam_block", "bounce", False)


def test_invalid_ip_for_sending_stays_authentication() -> None:
    assert verdict(550, "Invalid IP for sending mail, please authenticate")[0] == "auth_failure"


def test_fake_sender_is_our_sender() -> None:
    assert verdict(553, "Requested action not taken: Fake sender") == (
        "bad_sender", "bounce", False)
