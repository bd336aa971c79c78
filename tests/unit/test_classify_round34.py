"""Issue 12, round 34: part 37's blind misses (Zimbra / Carbonio's MTA side: the cbpolicyd policy
daemon it bundles, its milter; FortiMail's and FortiGate's documented replies).

A greylisting that says it has black-listed the sending server refuses our host. A reason headed
by our HELO/EHLO named invalid judges our host's name, whatever limit it adds. A count of messages
or a cumulative size over a period is a sending quota (a rate, deferred even as a 5xx), not a
mailbox's quota or one message's size. A time-out on the DNS lookup of an SPF/DKIM/DMARC record is
DNS trouble. Who may write or forward to a list is the receiver's policy (it must not suppress). A
message said to be detected or reported as spam is its content, even when the reply names the IP
it came from. Made-up texts (placeholder names and documentation addresses).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict


@pytest.mark.parametrize(
    ("code", "text", "disposition"),
    [
        (554, "5.7.1 Greylisting active: your server has been blacklisted", "bounce"),
        (451, "4.7.1 greylist check failed, sending host auto-blacklisted", "defer"),
    ],
)
def test_a_greylisting_that_blacklisted_our_server_is_a_block(
    code: int, text: str, disposition: str
) -> None:
    assert verdict(code, text) == ("spam_block", disposition, False)


def test_a_plain_greylisting_is_still_greylisting() -> None:
    assert verdict(451, "4.7.1 Greylisting in effect, please come back later")[0] == "greylist"


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 <bob@example.com>: Sender address rejected: Invalid HELO/EHLO; limit exceeded",
        "Invalid HELO - limit exceeded for this host",
    ],
)
def test_a_reason_headed_by_an_invalid_helo_is_our_name(text: str) -> None:
    assert verdict(554, text) == ("reverse_dns", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (450, "4.7.1 Policy rejection; message count limit reached"),
        (554, "5.7.1 Cumulative mail size quota exceeded for this hour"),
        (554, "5.7.1 <bob@example.com>: Sender address rejected: Message count exceeded"),
    ],
)
def test_a_count_or_cumulative_size_over_a_period_is_a_rate(code: int, text: str) -> None:
    assert verdict(code, text) == ("rate_limit", "defer", False)


def test_a_mailbox_quota_is_still_a_full_mailbox() -> None:
    assert verdict(552, "5.2.2 Mailbox quota exceeded")[0] == "mailbox_full"


def test_a_dns_timeout_for_spf_is_dns_trouble() -> None:
    text = "4.7.1 SPF check failed: timed out during DNS lookup"
    assert verdict(451, text) == ("dns_failure", "defer", False)


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 You are not permitted to post to this mailing list",
        "Recipient alice@example.org is not allowed to forward to the distribution list "
        "team@example.org",
    ],
)
def test_who_may_write_or_forward_to_a_list_is_policy(text: str) -> None:
    assert verdict(550, text) == ("policy", "bounce", False)


@pytest.mark.parametrize(
    "text",
    [
        "Mail from 198.51.100.4 rejected: the message was identified as spam",
        "5.7.1 This message has been blocked because the scanner reports it as spam",
    ],
)
def test_a_message_detected_as_spam_is_its_content(text: str) -> None:
    assert verdict(550, text) == ("spam_content", "bounce", False)


def test_an_ip_identified_as_a_spam_source_is_still_a_block() -> None:
    assert verdict(550, "Your IP 198.51.100.4 was identified as a spam source")[0] == "spam_block"
