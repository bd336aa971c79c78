"""Issue 12, round 37: part 40's blind misses (iRedAPD, iRedMail's HELO access samples, mailcow's
and Mailu's rspamd replies).

A sender that is not the authenticated login's is our sender. A password to renew is our
authentication, not an inactive account. A HELO refused because it names a known spam source or a
dynamic IP is a block of our side. Malicious code or macros detected, or a message that "does not
meet our delivery requirements" (rspamd's reject), is the message's content. An anti-spoofing
refusal that names failed authentication is authentication. A scanner that is not ready, under a
4xx, is the receiver's own trouble. Made-up texts (placeholder names and documentation addresses).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict


def test_a_sender_not_the_authenticated_login_is_our_sender() -> None:
    text = "5.7.1 <bob@example.com>: Recipient address rejected: Sender address is not the same as the authenticated user"
    assert verdict(554, text) == ("bad_sender", "bounce", False)


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 <bob@example.com>: Recipient address rejected: Password has expired, log in to renew it",
        "Please change your password before you send mail",
    ],
)
def test_a_password_to_renew_is_authentication(text: str) -> None:
    assert verdict(554, text) == ("auth_failure", "bounce", False)


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 <mx.example.net>: Helo command rejected: refused, mail from a known spamming host",
        "5.7.1 <h1.example.net>: Helo command rejected: you are on a dynamic IP that should not send mail",
    ],
)
def test_a_helo_naming_a_spam_source_or_dynamic_ip_is_a_block(text: str) -> None:
    assert verdict(554, text) == ("spam_block", "bounce", False)


def test_a_plain_bad_helo_is_still_reverse_dns() -> None:
    assert (
        verdict(554, "5.7.1 <localhost>: Helo command rejected: invalid name")[0] == "reverse_dns"
    )


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 Rejected: malicious code found",
        "5.7.1 Refused (dangerous macro detected)",
        "5.7.1 This message does not meet our delivery requirements.",
    ],
)
def test_malicious_code_or_a_filter_reject_is_content(text: str) -> None:
    assert verdict(554, text) == ("spam_content", "bounce", False)


def test_anti_spoofing_with_failed_authentication_is_authentication() -> None:
    assert verdict(554, "5.7.1 Refused (antispoofing: auth-failed)")[0] == "auth_failure"
    assert verdict(554, "5.7.1 Rejected (anti-spoofing)")[0] == "policy"


def test_a_scanner_not_ready_under_4xx_is_the_receivers_trouble() -> None:
    assert verdict(451, "4.7.1 Try again later, virus scanner not ready") == (
        "other_temporary",
        "defer",
        False,
    )
    assert verdict(554, "5.7.1 Virus found in message")[0] == "spam_content"
