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


# ---- clear words over an enhanced-code prior: "accepts mail only over TLS" is the encryption
# ---- policy even when sent as 4.2.2 (whose prior reads a full mailbox) ------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (451, "4.2.2 this host takes mail only over an encrypted channel"),
        (450, "4.2.2 We accept messages only via TLS"),
        (550, "5.2.2 TLS sessions only, sorry"),
    ],
)
def test_tls_only_words_win_over_a_mailbox_code(code: int, text: str) -> None:
    category, _, suppress = verdict(code, text)
    assert (category, suppress) == ("policy", False)


# ---- the message's format (NUL or 8-bit bytes, no header/body separator, too many MIME parts)
# ---- is the guide's format class, policy, not spam content -------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "5.6.0 message contains NUL bytes in its body",
        "5.6.0 Your mail contains raw 8bit characters in the Subject",
        "5.6.0 message lacks a header/body separator",
        "5.6.0 mail has no empty line after the headers",
        "5.7.1 message contains too many body parts; rejected",
    ],
)
def test_format_refusals_are_policy_not_content(text: str) -> None:
    assert verdict(554, text) == ("policy", "bounce", False)


# ---- our HELO name judged: "non-FQDN HELO", a "badhelo" list, "HELO domain must exist" -----


@pytest.mark.parametrize(
    ("code", "text", "outcome"),
    [
        (451, "refusing a non-FQDN EHLO (#4.3.0)", "defer"),
        (553, "your EHLO name is on our badhelo table (#5.7.1)", "bounce"),
        (553, "the HELO hostname must resolve (#5.1.8)", "bounce"),
    ],
)
def test_helo_wordings_are_reverse_dns(code: int, text: str, outcome: str) -> None:
    assert verdict(code, text) == ("reverse_dns", outcome, False)


# ---- our host or IP as the subject of "denied": a block of our side, not a local policy -------


@pytest.mark.parametrize(
    ("code", "text", "outcome"),
    [
        (553, "sorry, your mail server has been denied (#5.7.1)", "bounce"),
        (421, "your client IP 198.51.100.7 is denied for now (#4.7.1)", "defer"),
        (550, "your host was permanently denied access", "bounce"),
    ],
)
def test_our_host_denied_is_a_block(code: int, text: str, outcome: str) -> None:
    assert verdict(code, text) == ("spam_block", outcome, False)


# ---- temporary local failures named by their cause: a block-list lookup that failed is a DNS
# ---- failure (nothing listed), a scanner that failed is the receiver's trouble (nothing judged)


@pytest.mark.parametrize(
    "text",
    ["DNSBL query timed out, try again", "4.7.1 DNSBL check error, please retry"],
)
def test_failed_list_lookup_is_a_dns_failure(text: str) -> None:
    assert verdict(451, text) == ("dns_failure", "defer", False)


@pytest.mark.parametrize(
    "text",
    [
        "4.3.0 error calling the anti-virus daemon",
        "4.3.0 unable to contact spam filter, please retry",
        "4.3.0 virus scanner not responding",
    ],
)
def test_failed_scanner_is_the_receivers_trouble(text: str) -> None:
    assert verdict(451, text) == ("other_temporary", "defer", False)


# ---- sender wording wins over the "Recipient address rejected:" prefix of Postfix's RCPT stage:
# ---- SMTP AUTH required, a null sender refused, any restriction about the sender never suppress


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("5.7.1 <a@example.org>: Recipient address rejected: SMTP auth needed for this domain",
         "auth_failure"),
        ("5.7.1 <a@example.org>: Recipient address rejected: refused by policy due to a "
         "blank sender", "bad_sender"),
        ("5.7.1 <a@example.org>: Recipient address rejected: not permitted for users of this "
         "sender domain", "policy"),
    ],
)
def test_sender_wording_wins_at_rcpt(text: str, category: str) -> None:
    assert verdict(554, text) == (category, "bounce", False)


# ---- our side named as an open relay (as "open proxy" already was) is a block of our IP; "no DNS
# ---- records for your host / MTA" is our host's names (reverse_dns), not the receiver's trouble


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (553, "mail refused: 203.0.113.9 appears to be an open relay"),
        (550, "we take no mail from open relays such as 198.51.100.3"),
    ],
)
def test_open_relay_named_is_a_block(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_block", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text", "outcome"),
    [
        (450, "no DNS records found for your mail server, ask your admin", "defer"),
        (550, "There are no DNS entries at all for your host 198.51.100.3", "bounce"),
    ],
)
def test_no_dns_for_our_host_is_reverse_dns(code: int, text: str, outcome: str) -> None:
    assert verdict(code, text) == ("reverse_dns", outcome, False)
