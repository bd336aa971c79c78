"""Issue 12, round 29: part 32's blind misses (Exim's, notqmail's, smf-spf's, OpenDKIM's, GreenMail's
and smtp4dev's replies).

The receiver's own load is the load wording; what its next hop did not accept for now is its own
trouble. Usage replies that quote the command or say it needs an address name whose address; a
sender verification that could not complete, or a header sender that could not be verified, is
ours. The SMTP AUTH exchange failing in its own terms, Client SMTP Authorization and SPF's HELO
identity are authentication; the receiver's own DKIM software failing is its trouble. A lookup
that did not complete is DNS; a DNS record that says "no SMTP service" is a domain that takes no
mail; an address said undeliverable, or a remembered verification failure, is the recipient. A
header section too long is a size; a bcc refused, a verified certificate required and a bare-LF
page named are the receiver's rules for form and TLS; a PROXY header missing, characters refused
in commands, a malformed SIZE parameter and an envelope address too long are protocol errors, and
never suppress. A bare 554 "service not available" is RFC 5321's refusal at connection. Made-up
texts (placeholder names and documentation addresses).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- the receiver's side, for now ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["Too much load on this server, come back in a while", "mx2.example.net: too much load"],
)
def test_too_much_load_is_the_load_wording(text: str) -> None:
    assert verdict(421, text) == ("rate_limit", "defer", False)


@pytest.mark.parametrize(
    "text",
    [
        "Downstream relay refused the message",
        "4.4.0 next-hop server rejected, queued here",
        "Upstream MTA deferred",
    ],
)
def test_next_hop_not_accepting_for_now_is_the_receivers_trouble(text: str) -> None:
    assert verdict(451, text) == ("other_temporary", "defer", False)


def test_internal_dkim_software_error_is_no_authentication_failure() -> None:
    assert verdict(451, "4.7.0 internal DKIM failure, retry") == (
        "other_temporary",
        "defer",
        False,
    )
    assert verdict(451, "4.7.0 spf milter not responding") == ("other_temporary", "defer", False)
    # our DKIM signature failing stays ours
    assert verdict(550, "5.7.0 DKIM signature verification failed")[0] == "auth_failure"


# ---- usage replies and sender verification -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "category", "suppress"),
    [
        ('Required syntax: "MAIL FROM:<someone@host>"', "bad_sender", False),
        ("MAIL FROM: command requires an address", "bad_sender", False),
        ("Required syntax: 'RCPT TO:<someone@host>'", "bad_mailbox", True),
        ("RCPT TO needs a recipient argument", "bad_mailbox", True),
    ],
)
def test_usage_replies_name_whose_address(text: str, category: str, suppress: bool) -> None:
    assert verdict(501, text) == (category, "bounce", suppress)


@pytest.mark.parametrize(
    ("code", "text", "disposition"),
    [
        (451, "Unable to complete sender verification, try later", "defer"),
        (450, "4.1.7 cannot complete sender verify for <s@example.org>", "defer"),
        (550, "5.7.1 could not verify the Sender: header address", "bounce"),
        (550, "no valid sender in the header section", "bounce"),
    ],
)
def test_sender_and_header_sender_verification_is_ours(
    code: int, text: str, disposition: str
) -> None:
    assert verdict(code, text) == ("bad_sender", disposition, False)


# ---- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "disposition"),
    [
        (454, "4.7.0 Unable to authenticate right now", "defer"),
        (501, "5.5.2 malformed base64 in AUTH response", "bounce"),
        (501, "base64 string is invalid", "bounce"),
        (501, "Initial response not allowed for this mechanism", "bounce"),
        (550, "5.7.1 Client SMTP Authorization failed for mta.example.org", "bounce"),
        (550, "5.7.1 only servers enabled for the HELO identity may send", "bounce"),
    ],
)
def test_auth_exchange_csa_and_helo_identity_are_authentication(
    code: int, text: str, disposition: str
) -> None:
    assert verdict(code, text) == ("auth_failure", disposition, False)


# ---- DNS and the recipient -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "4.4.3 Could not resolve example.net right now",
        "MX lookup did not finish, deferring",
        "4.4.3 dns lookup failed to complete",
    ],
)
def test_lookups_that_did_not_complete_are_dns(text: str) -> None:
    assert verdict(451, text) == ("dns_failure", "defer", False)


def test_a_record_saying_no_smtp_service_is_a_domain_taking_no_mail() -> None:
    assert verdict(550, "the MX record indicates no mail service for example.net") == (
        "bad_domain",
        "bounce",
        True,
    )


@pytest.mark.parametrize(
    "text",
    [
        "<nobody@example.net>: is undeliverable",
        "Earlier recipient verification failure (cached)",
        "5.1.0 previous callout verification failed",
    ],
)
def test_undeliverable_address_and_remembered_failures_are_the_recipient(text: str) -> None:
    assert verdict(550, text) == ("bad_mailbox", "bounce", True)


def test_a_remembered_sender_verification_failure_never_suppresses() -> None:
    assert verdict(550, "previous sender verification failure (cached)")[2] is False


# ---- the message's form, TLS, protocol errors ----------------------------------------------------


def test_header_section_too_long_is_a_size_and_one_line_stays_form() -> None:
    assert verdict(552, "Message header section is excessively long") == (
        "message_too_large",
        "bounce",
        False,
    )
    assert verdict(552, "Header line is too long")[0] == "policy"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.7.1 BCC recipients not allowed here"),
        (554, "undisclosed recipients are refused"),
        (550, "5.7.1 No valid client certificate presented"),
        (550, "TLS client certificate is not verified"),
        (451, "4.6.0 read https://cr.yp.to/docs/smtplf.html first"),
    ],
)
def test_bcc_certificate_and_bare_lf_page_are_the_receivers_rules(code: int, text: str) -> None:
    assert verdict(code, text)[0] == "policy"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (503, "5.5.1 PROXY protocol header missing"),
        (503, "Proxy negotiation did not complete"),
        (501, "5.5.2 8-bit characters are refused in SMTP command lines"),
        (501, "Malformed message size given"),
        (501, "5.5.4 size value is not a number"),
        (554, "5.1.3 envelope addresses too long"),
    ],
)
def test_protocol_errors_are_no_policy_size_or_unknown_user(code: int, text: str) -> None:
    assert verdict(code, text) == ("other_permanent", "bounce", False)


def test_open_proxy_stays_a_block() -> None:
    assert verdict(550, "5.7.1 rejected: open proxy 203.0.113.7")[0] == "spam_block"


# ---- 554 at connection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["ESMTP service not available", "mx.example.net: no SMTP service here."]
)
def test_bare_554_service_not_available_is_a_block(text: str) -> None:
    assert verdict(554, text) == ("spam_block", "bounce", False)


def test_554_service_not_available_with_a_reason_keeps_it() -> None:
    assert verdict(554, "Service not available: bad DNS PTR resource record")[0] == "reverse_dns"
