"""Issue 12, round 4: classes of replies the blind parts heldout5-8 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording), and asserts what
costs money: the category, whether the message is bounced or deferred, and whether the recipient is
suppressed. Real replies of these classes are in tests/data/replies/.
"""

from __future__ import annotations

import pytest

from kmta.policy.classify import code_digits_enhanced, is_throttle
from tests.unit.classify_rounds import verdict

# ---- a server's own basic codes spell RFC 3463's subject and detail (Courier) -------------------

@pytest.mark.parametrize(
    ("code", "expected"),
    [(517, "5.1.7"), (523, "5.2.3"), (546, "5.4.6"), (417, "4.1.7"), (422, "4.2.2"),
     (550, None), (554, None), (421, None), (521, None), (556, None), (535, None), (525, None),
     (500, None), (400, None), (None, None), (250, None)],
)
def test_code_digits_enhanced_only_for_non_standard_codes(code: int | None,
                                                          expected: str | None) -> None:
    assert code_digits_enhanced(code) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Domain does not exist: jane@sender.example.",
        "Invalid domain, see <URL:https://example.org/rfc1035>",
        "Unknown host: sender.example",
        "MX records for jane@sender.example violate section 3.3.9 of RFC 1035.",
    ],
)
def test_courier_517_mail_from_checks_are_the_sender_and_never_suppress(text: str) -> None:
    assert verdict(517, text) == ("bad_sender", "bounce", False)


def test_the_same_words_with_a_standard_code_still_name_the_recipient_domain() -> None:
    # only the spelled code says "sender": a 550 about the recipient's domain still suppresses
    assert verdict(550, "Domain does not exist: jane@rcpt.example.") == ("bad_domain", "bounce", True)


def test_a_spelled_code_never_names_the_recipient_on_its_own() -> None:
    # 511/512/522 would spell x.1.1 / x.1.2 / x.2.2; without words saying so, nobody is suppressed
    # and no mailbox is called full
    for code, text in ((511, "Headers name nobody."), (512, "Cannot continue."),
                       (422, "License Expired")):
        category, _, suppress = verdict(code, text)
        assert category not in ("bad_mailbox", "bad_domain", "mailbox_full") and not suppress


def test_courier_523_and_546_name_size_and_loop() -> None:
    assert verdict(523, "Message length (99 bytes) exceeds administrative limit.")[0] == (
        "message_too_large")
    assert verdict(546, "Routing loop detected -- too many Received: headers.")[0] == (
        "other_permanent")


def test_a_real_enhanced_code_wins_over_the_spelled_one() -> None:
    assert verdict(517, "5.1.1 mailbox jane does not exist") == ("bad_mailbox", "bounce", True)


# ---- our HELO/EHLO name and claimed identity ------------------------------------------------

@pytest.mark.parametrize(
    ("code", "text"),
    [
        (501, "5.5.4 Invalid domain name or ip supplied as HELO argument"),
        (550, "Invalid address format in EHLO"),
        (501, "5.5.4 Provided EHLO/HELO relay.sender.example can not resolved."),
        (550, "HELO hostname does not exist"),
        (550, "EHLO name did not resolve"),
        (550, "I do not believe you are relay.sender.example."),
        (550, "You are not localhost"),
        (550, "You are not who you claim you are"),
        (550, "Forged IPs not accepted here"),
        (550, "RFC 5321 allows an address literal, but we do not"),
    ],
)
def test_helo_identity_is_reverse_dns_and_never_suppresses(code: int, text: str) -> None:
    assert verdict(code, text) == ("reverse_dns", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text"),
    [(503, "5.5.1 Error: send HELO/EHLO first"), (501, "5.5.4 HELO/EHLO argument is invalid")],
)
def test_helo_protocol_errors_stay_protocol(code: int, text: str) -> None:
    assert verdict(code, text)[0] == "other_permanent"


@pytest.mark.parametrize(
    "text",
    ["rDNS Temporary Failure", "client [192.0.2.9] rDNS lookup timeout",
     "4.7.1 PTR lookup timed out for 192.0.2.9"],
)
def test_a_reverse_dns_lookup_that_failed_for_now_is_a_dns_failure(text: str) -> None:
    assert verdict(450, text) == ("dns_failure", "defer", False)


# ---- Spectrum / Charter AUP# codes -----------------------------------------------------------

@pytest.mark.parametrize("aup", ["AUP#I-1310", "AUP#In-1320", "AUP#I-1330", "AUP#In-1340"])
def test_spectrum_rate_time_outs_defer_and_slow_down(aup: str) -> None:
    text = f"5.1.0 <bounce@sender.example> sender rejected. Please see the error codes. {aup}"
    category, disposition, suppress = verdict(550, text)
    assert (category, disposition, suppress) == ("rate_limit", "defer", False)
    assert is_throttle(category)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "mx.example.net cmsmtp 192.0.2.9 blocked. Please see the error codes. AUP#In-1020"),
        (421, "mx.example.net cmsmtp 192.0.2.9 blocked. AUP#In-1370"),
        (550, "5.1.0 <bounce@sender.example> sender rejected. AUP#O-1540"),
    ],
)
def test_spectrum_other_aup_codes_block_our_ip_without_suppressing(code: int, text: str) -> None:
    category, _, suppress = verdict(code, text)
    assert (category, suppress) == ("spam_block", False)


# ---- a session ended over our commands ----------------------------------------------------------

@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (421, "4.7.0 mx.example.net Error: too many errors", "other_temporary"),
        (421, "Too many bad commands, closing", "other_temporary"),
        (521, "Closing connection, 5 unrecognized commands.", "other_permanent"),
        (521, "Stop wasting my time, too many consecutive NOOPs", "other_permanent"),
    ],
)
def test_session_errors_are_no_connection_failure_and_no_domain(code: int, text: str,
                                                               expected: str) -> None:
    category, _, suppress = verdict(code, text)
    assert (category, suppress) == (expected, False)
    assert not is_throttle(category, temporary=code < 500)


def test_a_521_without_such_words_is_still_a_host_that_takes_no_mail() -> None:
    assert verdict(521, "mx.rcpt.example does not accept mail") == ("bad_domain", "bounce", True)


# ---- spam filter scores, bulk mail, archives ------------------------------------------------------

@pytest.mark.parametrize(
    ("code", "text"),
    [
        (552, "spam score exceeded threshold"),
        (550, "Message scored 9.1 spam points, rejected"),
        (550, "5.7.1 Blocked by SpamAssassin"),
        (554, "dspam classified this message, refused"),
        (550, "5.7.1 Rejected - bulk email"),
        (550, "5.7.1 Message rejected after classification as Bulk mail"),
        (552, "We do not accept password-protected zip files"),
    ],
)
def test_content_filters_named_are_spam_content_and_bounce(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_content", "bounce", False)


# ---- the message's form ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("code", "text"),
    [
        (552, "We require a valid Date header"),
        (552, "unparseable From header"),
        (500, "5.0.0 line delimiter must be CRLF"),
        (521, "5.5.2 Error reading DATA: invalid line ending"),
        (554, "5.3.4 Line is too long."),
        (500, "5.6.0 message with non-us-ascii data requires 8bitmime"),
        (550, "5.6.0 message should not have Return-Path header"),
        (552, "a bounce return path must be empty (RFC 3834)"),
        (552, "this bounce message does not have 1 recipient"),
        (500, "Duplicate message rejected."),
        (550, "Connecting host started transmitting before SMTP greeting"),
    ],
)
def test_message_form_is_policy_never_the_sender_or_the_size(code: int, text: str) -> None:
    assert verdict(code, text) == ("policy", "bounce", False)


def test_an_auth_exchange_line_too_long_is_protocol() -> None:
    assert verdict(500, "5.5.6 Authentication Exchange line is too long")[0] == "other_permanent"


# ---- authentication ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("code", "text"),
    [
        (538, "5.7.11 authentication requires tls"),
        (503, "SSL/TLS required before AUTH"),
        (504, "Invalid authentication string"),
        (525, "5.7.13 login disabled for account"),
        (553, "5.7.1 <jane@sender.example>: Sender address rejected: not logged in"),
        (550, "5.7.1 Blocked - see: http://www.openspf.net/Why?s=mfrom&id=x&ip=192.0.2.9"),
    ],
)
def test_auth_wording_is_auth_failure(code: int, text: str) -> None:
    assert verdict(code, text) == ("auth_failure", "bounce", False)


def test_tls_required_for_mail_stays_policy() -> None:
    assert verdict(530, "5.7.0 Must issue a STARTTLS command first")[0] == "policy"


def test_a_disabled_recipient_account_stays_inactive() -> None:
    assert verdict(525, "5.7.13 Disabled recipient address") == ("inactive_mailbox", "bounce",
                                                                 False)


# ---- greylisting that names no cause ----------------------------------------------------------

@pytest.mark.parametrize(
    "text",
    ["This mail is temporarily denied", "4.4.3 Temporary rejected: Please try again later",
     "4.7.1 Temporarily rejected. Reconnect too fast, try again later"],
)
def test_temporarily_denied_without_a_cause_is_greylisting(text: str) -> None:
    assert verdict(451, text) == ("greylist", "defer", False)


@pytest.mark.parametrize(
    "text",
    ["4.7.1 Temporarily rejected: client host 192.0.2.9 blocked using zen.example",
     "4.7.1 Temporarily rejected: sending rate exceeded"],
)
def test_temporarily_rejected_with_a_cause_is_that_cause(text: str) -> None:
    assert verdict(451, text)[0] != "greylist"


# ---- Postfix's "Recipient address rejected: <reason>": the reason decides --------------------------

@pytest.mark.parametrize(
    ("code", "text"),
    [
        (503, "5.5.0 <jane@rcpt.example>: Recipient address rejected: Improper use of SMTP "
              "command pipelining"),
        (550, "5.5.3 <>: Recipient address rejected: Multi-recipient bounce"),
    ],
)
def test_recipient_address_rejected_for_a_policy_never_suppresses(code: int, text: str) -> None:
    assert verdict(code, text) == ("policy", "bounce", False)


def test_recipient_not_fully_qualified_is_the_recipient_not_the_sender() -> None:
    category, _, _ = verdict(504, "5.5.2 <jane>: Recipient address rejected: need fully-qualified "
                                  "address")
    assert category == "bad_mailbox"
    assert verdict(504, "5.5.2 <jane>: Sender address rejected: need fully-qualified address")[0] == (
        "bad_sender")


# ---- block lists and relaying named in other words ------------------------------------------------

@pytest.mark.parametrize(
    ("code", "text"),
    [
        (521, "<192.0.2.9> is blocked"),
        (550, "You were naughty. You cannot connect for 2 more days."),
        (550, "very bad karma: -4"),
        (550, "Denied due to spam list"),
    ],
)
def test_our_ip_blocked_in_other_words_is_spam_block(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_block", "bounce", False)


def test_relaying_to_a_recipient_prohibited_is_relay_denied() -> None:
    assert verdict(550, "relaying to <jane@rcpt.example> prohibited by administrator")[0] == (
        "relay_denied")


def test_cannot_append_to_a_mailbox_file_that_is_too_large_is_a_full_mailbox() -> None:
    text = "cannot append message to destination file /var/mail/jane: error writing message: File too large"
    assert verdict(550, text)[0] == "mailbox_full"
