"""Issue 12, round 32: part 35's blind misses (gateways and filters in front of recipients'
mailboxes: MailCleaner's Exim ACLs, Barricade MX smtpf, ASSP, Email Security.cloud's list,
MailChannels Inbound).

A HELO name "blocked" is judged as one "denied" is. A bounce refused for its BATV signature is the
receiving domain's policy, not our sender. A recipient named as on the receiver's own list is its
access policy, not our IP blocked. Relaying to a destination "forbidden" is relaying refused. A 5xx
refusing the service or connection as a whole, and nothing else, is a block of our host. A 5xx
whose only words are the message rejected or blocked judges the message. An address inside a URL
does not hide the URL's host (openspf.org: SPF). Made-up texts (placeholder names and
documentation addresses).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict


@pytest.mark.parametrize("text", ["HELO blocked", "5.7.1 EHLO name mybox-pc blocked by policy"])
def test_a_blocked_helo_name_is_our_host_name(text: str) -> None:
    assert verdict(550, text) == ("reverse_dns", "bounce", False)


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 We do not accept unsigned bounces",
        "5.7.1 <carol@example.org>: bad return path signature",
        "Bounce rejected: missing BATV tag",
    ],
)
def test_a_bounce_refused_for_its_batv_signature_is_policy(text: str) -> None:
    assert verdict(550, text) == ("policy", "bounce", False)


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 Blocklisted recipient: carol@example.org",
        "5.7.1 client relay.example.net [192.0.2.7] recipient <carol@example.org> blacklisted",
        "Recipient address <carol@example.org> is deny listed here",
    ],
)
def test_a_recipient_on_the_receivers_list_is_policy_not_our_ip(text: str) -> None:
    assert verdict(554, text) == ("policy", "bounce", False)


def test_our_ip_on_a_block_list_stays_a_block() -> None:
    assert verdict(554, "5.7.1 Recipient not authorized, your IP has been found on a block list")[
        0
    ] == "spam_block"


@pytest.mark.parametrize(
    "text", ["Relaying to that destination is forbidden", "5.7.1 relay to example.net forbidden"]
)
def test_relaying_forbidden_is_relay_denied(text: str) -> None:
    assert verdict(550, text) == ("relay_denied", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "Service refused, closing transmission channel"),
        (554, "5.7.1 Connection refused."),
        (521, "5.7.1 Access denied"),
    ],
)
def test_the_session_refused_alone_is_a_block_of_our_host(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_block", "bounce", False)


def test_access_denied_alone_outside_521_stays_policy() -> None:
    # Postfix's access(5) REJECT default: the receiver's access list, not our host blocked
    assert verdict(554, "5.7.1 Access denied")[0] == "policy"


@pytest.mark.parametrize(
    "text", ["5.7.1 [XQ] Mail rejected", "Your message blocked", "5.7.0 E-mail rejected."]
)
def test_the_message_rejected_alone_is_its_content(text: str) -> None:
    assert verdict(550, text) == ("spam_content", "bounce", False)


def test_a_4xx_message_rejected_alone_stays_a_deferral() -> None:
    assert verdict(451, "4.7.1 Message rejected")[1] == "defer"


def test_an_address_in_a_url_does_not_hide_the_spf_page() -> None:
    text = "5.0.0 Refused, see http://www.openspf.net/Why?s=mfrom&id=carol@example.net&ip=192.0.2.7"
    assert verdict(550, text) == ("auth_failure", "bounce", False)
