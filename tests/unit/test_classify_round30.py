"""Issue 12, round 30: part 33's blind misses (Postfix's smtpd_check.c and smtpd.c, OpenSMTPD's,
Haraka's and Mailpit's replies).

An SMTP command, its line or an option too long, a command extension turned off and a BDAT chunk
refused are protocol errors, not the message's size or form. Lookups of the recipient's mail
exchanger that failed for now are DNS; a lookup failure named alone is the receiver's own tables;
an address verification that had a problem is the receiver's trouble, or our sender's under the
sender's code. AUTH commands counted per client are a rate; AUTH input malformed is the AUTH
exchange. Our sender's domain not matching the login, or not allowed from our host, is our
sender. A malformed RCPT TO address is the recipient's. Postfix's defer_if_* actions, a bare
"closing connection" and a bare 4xx "message denied" name no cause; our host named as denied is a
block. A bare line-feed spelt with a hyphen is the message's form. Made-up texts (placeholder
names and documentation addresses).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- protocol errors, not the message ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (500, "5.5.2 Command line too long, max 512"),
        (500, "Invalid command: HELO: line too long"),
        (501, "5.5.4 Parameter too long: ENVID"),
        (555, "5.5.4 MAIL argument too large"),
        (501, "5.5.4 Invalid message size syntax"),
        (502, "5.7.1 SMTPUTF8 support is disabled here"),
        (554, "5.7.1 Empty BDAT chunk refused"),
    ],
)
def test_commands_too_long_and_extensions_off_are_protocol_errors(code: int, text: str) -> None:
    assert verdict(code, text) == ("other_permanent", "bounce", False)


def test_the_message_too_large_stays_its_size() -> None:
    assert verdict(552, "5.3.4 Message too large for this server")[0] == "message_too_large"
    assert verdict(550, "5.6.0 Body line too long")[0] == "policy"


# ---- lookups and verification for now ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "4.4.4 <a@example.org>: Recipient address rejected: Unable to look up host mx1.example.org"
        " as mail exchanger: Name service error",
        "4.4.4 <a@example.org>: Recipient address rejected: Unable to lookup mail exchanger host",
        "4.4.4 <b@example.com>: Sender address rejected: Unable to verify host mx.example.com as MX",
    ],
)
def test_mail_exchanger_lookups_that_failed_for_now_are_dns(text: str) -> None:
    assert verdict(450, text) == ("dns_failure", "defer", False)


@pytest.mark.parametrize(
    "text", ["4.3.0 <a@example.org>: lookup error", "Temporary lookup failed", "4.3.0 Lookup failure."]
)
def test_a_lookup_failure_named_alone_is_the_receivers_trouble(text: str) -> None:
    assert verdict(451, text) == ("other_temporary", "defer", False)
    # a DNS lookup named stays DNS
    assert verdict(451, "DNS lookup failure for example.org")[0] == "dns_failure"


def test_an_address_verification_problem_is_whose_code_says() -> None:
    assert verdict(
        450, "4.1.1 <a@example.org>: Recipient address rejected: address verification failure"
    ) == ("other_temporary", "defer", False)
    assert verdict(
        450, "4.1.7 <b@example.com>: Sender address rejected: address verification failure"
    ) == ("bad_sender", "defer", False)


# ---- AUTH, our sender ----------------------------------------------------------------------------


def test_auth_commands_counted_per_client_are_a_rate() -> None:
    assert verdict(421, "4.7.0 too many authentication requests from 198.51.100.7") == (
        "rate_limit",
        "defer",
        False,
    )
    # failed logins stay authentication
    assert verdict(535, "5.7.8 too many authentication failures")[0] == "auth_failure"


def test_malformed_auth_input_is_the_auth_exchange() -> None:
    assert verdict(501, "5.5.4 Invalid AUTH argument") == ("auth_failure", "bounce", False)


@pytest.mark.parametrize(
    "text",
    [
        "Sender domain example.com does not match authenticated user domain",
        "MAIL FROM domain 'example.com' is not permitted from this IP",
        "Envelope domain example.net did not match login identity",
    ],
)
def test_our_senders_domain_not_ours_to_use_is_our_sender(text: str) -> None:
    assert verdict(550, text) == ("bad_sender", "bounce", False)


def test_a_malformed_rcpt_to_address_is_the_recipients() -> None:
    assert verdict(553, "Bad RCPT TO address") == ("bad_mailbox", "bounce", True)


# ---- no cause named; our host denied; the message's form -----------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (450, "4.7.0 <a@example.org>: Recipient address rejected: defer_if_reject requested"),
        (421, "mx.example.org closing transmission channel"),
        (452, "Mail rejected temporarily"),
    ],
)
def test_deferrals_without_a_cause_are_the_receivers_trouble(code: int, text: str) -> None:
    assert verdict(code, text) == ("other_temporary", "defer", False)


def test_a_5xx_message_denied_is_not_read_as_a_deferral() -> None:
    assert verdict(550, "Message denied")[1] == "bounce"


def test_our_host_named_as_denied_is_a_block() -> None:
    assert verdict(554, "5.7.1 Access denied for relay.example.com[198.51.100.7]") == (
        "spam_block",
        "bounce",
        False,
    )


def test_a_bare_line_feed_spelt_with_a_hyphen_is_the_messages_form() -> None:
    assert verdict(451, "Message contains a bare line-feed") == ("policy", "defer", False)
