"""Issue 12, round 36: part 39's blind misses (hMailServer's source beyond the tuned part, the
current Exchange Online NDR table).

A domain, alias or list said disabled or not active is the recipient's account state (inactive,
no suppression). A recipient not in the receiver's list of its addresses, or a reply that asks for
a valid address, names an unknown recipient. DNS answers that fail DNSSEC validation are DNS
trouble, not an unknown domain. One header named by its field name and said too long is its form;
the header section as a whole stays a size. A limit with its scope between it and "exceeded" is a
rate. Under Microsoft's 5.7.12 / 5.7.13x a sender "not authenticated" is a recipient closed to
outside senders (policy). A block our own organization set on a recipient is policy, not a ban.
Made-up texts (placeholder names and documentation addresses).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict


@pytest.mark.parametrize(
    "text",
    ["Domain is disabled.", "This alias has been deactivated", "Mailing list is not active"],
)
def test_a_disabled_domain_alias_or_list_is_inactive(text: str) -> None:
    assert verdict(550, text) == ("inactive_mailbox", "bounce", False)


def test_our_sending_domain_disabled_is_still_our_sender() -> None:
    text = "5.7.1 <bob@example.com>: Sender address rejected: Domain has been disabled"
    assert verdict(554, text)[0] == "bad_sender"


@pytest.mark.parametrize(
    "text",
    [
        "Recipient is not in the recipient list.",
        "Address not on our valid recipients list",
        "A valid e-mail address is required.",
    ],
)
def test_a_recipient_not_listed_or_an_invalid_address_is_unknown(text: str) -> None:
    assert verdict(550, text) == ("bad_mailbox", "bounce", True)


def test_a_dnssec_validation_failure_is_dns_trouble() -> None:
    text = "4.4.3 DNSSEC validation failed: domain example.org returned bogus records"
    assert verdict(451, text) == ("dns_failure", "defer", False)
    assert verdict(451, "dnssec-bogus: invalid DNSSEC answer for example.org")[0] == "dns_failure"


@pytest.mark.parametrize("text", ["5.6.0 Subject header is too long", "X-Mailer: header too long"])
def test_one_named_header_too_long_is_its_form(text: str) -> None:
    assert verdict(550, text) == ("policy", "bounce", False)


def test_the_header_section_too_long_is_still_a_size() -> None:
    assert verdict(552, "5.3.4 Message header is too long")[0] == "message_too_large"


@pytest.mark.parametrize(
    "text",
    [
        "Recipient's hourly message receive limit from one sender exceeded",
        "Hourly message limit on this account exceeded",
    ],
)
def test_a_limit_with_its_scope_before_exceeded_is_a_rate(text: str) -> None:
    assert verdict(550, text) == ("rate_limit", "defer", False)


def test_a_microsoft_code_for_outside_senders_is_policy() -> None:
    assert verdict(550, "5.7.134 Sender is not authenticated") == ("policy", "bounce", False)
    # without that code, "not authenticated" is still authentication
    assert verdict(530, "5.7.0 Sender not authenticated")[0] == "auth_failure"


def test_a_block_our_own_organization_set_is_policy() -> None:
    text = "5.7.703 Messages to alice@example.org are blocked by your organization"
    assert verdict(550, text) == ("policy", "bounce", False)
    assert verdict(550, "5.7.708 Access denied, traffic not accepted from this IP")[0] == "spam_block"
