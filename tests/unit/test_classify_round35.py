"""Issue 12, round 35: part 38's blind misses (filters and gateways: Haraka's plugins, Scrollout F1,
OpenSMTPD's filters, rspamd's action messages).

A receiver's own scanner (rspamd, spamd, clamd) failing or timing out is its temporary trouble, not
spam. Mail from our IP said to be blocked is a block of our IP, whatever cause follows. Our sending
domain or FROM address named is our sender, never an unknown recipient domain. A recipient that
rejected our messages, a poor average rate or reputation and an OS fingerprint judge our side.
Bounces refused (too many recipients, a non-empty return path, "does not accept bounces") are the
receiver's policy on bounces. A forged header named in the message, talking too soon, bare "deferred"
and "recipient <address> denied" deferrals, scanners' "bulk message found" / "threat found", and
nested archives over a depth limit each keep their own class. Made-up texts (placeholder names and
documentation addresses).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict


@pytest.mark.parametrize(
    "text",
    ["Rspamd scan timeout", "spamd connect timeout", "clamd scan error", "amavisd connection failed"],
)
def test_the_receivers_scanner_failing_is_its_trouble(text: str) -> None:
    assert verdict(450, text) == ("other_temporary", "defer", False)


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 <mx.example.net[192.0.2.7]>: Client host rejected: Messages from your IP are "
        "temporary blocked. We recorded too many SMTP errors from 192.0.2.7 (no RDNS)",
        "Mail from your IP address has been blocked: spam messages received from 192.0.2.7",
    ],
)
def test_mail_from_our_ip_blocked_is_a_block_whatever_cause_follows(text: str) -> None:
    assert verdict(554, text)[0] == "spam_block"


@pytest.mark.parametrize(
    "text",
    [
        "Email from that domain is not accepted here.",
        "No MX for your FROM address",
        "That sender cannot send mail here",
    ],
)
def test_our_sending_domain_or_sender_never_suppresses(text: str) -> None:
    assert verdict(550, text) == ("bad_sender", "bounce", False)


@pytest.mark.parametrize(
    "text",
    [
        "Recipient rejected messages from bob@example.com to alice@example.org",
        "Poor avg. rate for sender: bob@example.com and IP: 192.0.2.7",
        'p0f: fingerprint matched: "Windows XP"',
        "OS fingerprint of your host is not allowed",
    ],
)
def test_our_side_judged_by_reputation_or_fingerprint(text: str) -> None:
    assert verdict(554, text) == ("spam_block", "bounce", False)


@pytest.mark.parametrize(
    "text",
    [
        "this bounce message has too many recipients",
        "bounce with non-empty Return-Path (RFC 3834)",
        "<alice@example.org> does not accept bounces",
        "invalid bounce",
    ],
)
def test_bounces_refused_are_the_receivers_policy(text: str) -> None:
    assert verdict(550, text) == ("policy", "bounce", False)


def test_a_forged_header_named_in_the_message_is_its_form() -> None:
    text = "Message contains Authentication-Results header for authserv-id 'mx.example.net'"
    assert verdict(421, text) == ("policy", "defer", False)


def test_talking_too_soon_is_an_unsynchronised_client() -> None:
    assert verdict(554, "You talk too soon") == ("policy", "bounce", False)


@pytest.mark.parametrize("text", ["4.7.1 deferred", "recipient <alice@example.org> denied"])
def test_a_bare_deferral_names_no_cause(text: str) -> None:
    assert verdict(451, text) == ("other_temporary", "defer", False)


@pytest.mark.parametrize(
    "text",
    [
        '5.7.1 DCC: bulk message found: "bulk Fuz1=many"',
        '5.7.1 ICAP: threat found with icap scanner: "Win.Test.EICAR_HDB-1"',
        "Message contains nested archives exceeding the maximum depth",
    ],
)
def test_scanners_findings_and_archive_depth_are_content(text: str) -> None:
    assert verdict(554, text) == ("spam_content", "bounce", False)


def test_a_limit_exceeded_stays_a_rate() -> None:
    assert verdict(451, "message limit exceeded, try again later")[0] == "rate_limit"
