"""Issue 12, round 23: part 27's blind misses, by wording classes.

Forwarding refused as relaying is; a client told to fetch its mail before it may send (POP before
SMTP) has not authenticated; our sending identity "not verified" with the relay, and sending from
our domain or account paused, are our sender; a refusal "for your MAIL FROM address" names our
sender; NetEase's IP codes HL:IHU / HL:IPB and a 554 greeting that is nothing but a host name
refuse our IP. Made-up texts (placeholder names); each asserts the category, bounce or defer, and
whether the recipient is suppressed.
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- forwarding refused: relaying by another name ---------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "<r@example.net>... Forwarding denied"),
        (554, "5.7.1 Forwarding is not allowed for r@example.net"),
        (550, "Mail forwarding prohibited"),
    ],
)
def test_forwarding_refused_is_a_relay_refusal(code: int, text: str) -> None:
    assert verdict(code, text) == ("relay_denied", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text", "category"),
    [
        (554, "5.4.6 Mail forwarding loop for r@example.net", "other_permanent"),
        (550, "5.1.6 Destination mailbox has moved, No forwarding address", "bad_mailbox"),
    ],
)
def test_forwarding_words_that_are_no_relay_refusal(code: int, text: str, category: str) -> None:
    assert verdict(code, text)[0] == category


# ---- POP before SMTP: the client has not authenticated ----------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (553, "5.3.0 <s@example.org>... Please receive your mail before sending"),
        (550, "Check your mail first before sending"),
        (554, "POP before SMTP required"),
    ],
)
def test_fetch_mail_before_sending_is_authentication(code: int, text: str) -> None:
    assert verdict(code, text) == ("auth_failure", "bounce", False)


def test_relaying_denied_first_stays_a_relay_refusal() -> None:
    # round 14: relaying named first, its reason after
    text = "5.7.1 Relaying denied: You must check for new mail before sending mail."
    assert verdict(550, text)[0] == "relay_denied"


# ---- our sending identity not verified, our sending paused ------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (530, "Sender domain is not verified for this account. From: s@example.org"),
        (550, "From address is not verified"),
        (554, "5.7.1 Sender identity has not been verified"),
        (550, "Sending from this domain is paused"),
        (550, "5.7.1 Sending for your account has been suspended"),
        (553, "5.7.1 For your MAIL FROM address <s@example.org> policy analysis: not accepted"),
    ],
)
def test_our_sender_not_verified_or_paused(code: int, text: str) -> None:
    assert verdict(code, text) == ("bad_sender", "bounce", False)


def test_a_recipient_not_verified_is_no_sender_problem() -> None:
    # the recipient side's verification stays the recipient's (or the receiver's) matter
    text = "4.1.1 <r@example.net>: Recipient address rejected: unverified address"
    category, _, _ = verdict(450, text)
    assert category != "bad_sender"


# ---- refusals of our IP: NetEase's IP codes, a 554 greeting with only a host name -------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "HL:IHU http://mail.example.net/help/spam.htm"),
        (554, "HL:IPB"),
        (554, "mx1.example.net"),
        (554, "mail-in.relay.example.co.uk."),
    ],
)
def test_refusals_of_our_ip(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_block", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.1.10 RESOLVER.ADR.RecipientNotFound"),
        (550, "5.7.1 Access-Denied-XM.SSR-001"),
        (421, "mx1.example.net"),
    ],
)
def test_host_name_alone_only_under_554(code: int, text: str) -> None:
    assert verdict(code, text)[0] != "spam_block"
