"""Issue 12, round 14: classes of replies that the blind part heldout18 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout18.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- a ceiling said per time window is a rate, whatever it counts (bytes, tries, messages) ------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (450, "4.7.1 <ann@rcpt.example>: Recipient address rejected: at most 2mb every 30 minutes"),
        (450, "4.7.1 please do not connect more than twice per minute"),
        (451, "4.7.1 limit of 500 kb per hour for your host"),
        (550, "5.7.1 no more than once per 10 minutes, please"),
    ],
)
def test_ceiling_per_time_window_is_a_rate(code: int, text: str) -> None:
    assert verdict(code, text) == ("rate_limit", "defer", False)


# ---- a session command limit ("<command> sent too many times") is the session, not a rate -------


@pytest.mark.parametrize(
    "text",
    ["4.7.0 RCPT issued too many times, closing", "EHLO sent too many times in this session"],
)
def test_command_repeated_too_many_times_is_the_session(text: str) -> None:
    assert verdict(421, text) == ("other_temporary", "defer", False)


# ---- "blocked using" a list behind Postfix's "Recipient address rejected:" prefix: a block -------


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 <bo@rcpt.example>: Recipient address rejected: blocked using 3 DNSBLs",
        "5.7.1 <bo@rcpt.example>: Recipient address rejected: blocked using bl.lists.example",
        "5.7.1 <bo@rcpt.example>: Recipient address rejected: blocked by 2 RBLs",
    ],
)
def test_blocked_using_lists_is_a_block_never_an_inactive_recipient(text: str) -> None:
    assert verdict(554, text) == ("spam_block", "bounce", False)


# ---- a relaying refusal stated first, with a reverse-DNS or HELO reason after it: relaying -------


@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 <cy@rcpt.example>... Relaying denied. Cannot resolve PTR for 198.51.100.7",
        "5.7.1 Relaying denied: no reverse DNS for your host",
        "Relay not permitted; HELO name mail.sender.example does not match",
    ],
)
def test_relaying_refused_first_is_relay_denied(text: str) -> None:
    assert verdict(550, text) == ("relay_denied", "bounce", False)


# ---- our IP's reverse DNS in sendmail's words ("client IP address ... does not resolve",
# ---- "possibly forged hostname for <ip>"), whatever the x.1.8 sender code says ------------------


@pytest.mark.parametrize(
    ("code", "text", "verdict_"),
    [
        (451, "4.1.8 client IP address 198.51.100.7 does not resolve", "defer"),
        (550, "5.1.8 possibly forged hostname for 198.51.100.7", "bounce"),
        (450, "4.7.1 your IP 198.51.100.7 cannot be resolved", "defer"),
    ],
)
def test_our_ip_not_resolving_is_reverse_dns(code: int, text: str, verdict_: str) -> None:
    assert verdict(code, text) == ("reverse_dns", verdict_, False)


# ---- an MX record judged illegal / invalid is our sending domain's, never an unknown recipient ---


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.1.2 bogus MX record for domain sender.example"),
        (553, "5.1.2 illegal MX entries in sender.example, see RFC 2181"),
        (550, "5.1.2 <dee@sender.example>... Unusable MX hosts for sender.example"),
    ],
)
def test_mx_record_judged_is_bad_sender(code: int, text: str) -> None:
    assert verdict(code, text) == ("bad_sender", "bounce", False)


# ---- an address without its domain: the sender's is bad_sender, the recipient's a malformed
# ---- recipient address (bad_mailbox, as the corpus has "need fully-qualified address") ---------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "5.5.4 a valid domain name is required for the sender address",
            ("bad_sender", "bounce", False),
        ),
        ("5.5.4 <ed>... domain name missing in mail from", ("bad_sender", "bounce", False)),
        ("improper recipient address <ed>, add a domain", ("bad_mailbox", "bounce", True)),
        ("domain name required for recipient <ed>", ("bad_mailbox", "bounce", True)),
    ],
)
def test_address_without_domain(text: str, expected: tuple[str, str, bool]) -> None:
    assert verdict(553, text) == expected


# ---- "at least one valid recipient" is the transaction's recipients refused (as "no valid
# ---- recipients" is in the tuned part) -----------------------------------------------------------


def test_at_least_one_valid_recipient_is_bad_mailbox() -> None:
    assert verdict(554, "5.5.1 give at least one valid recipient first") == (
        "bad_mailbox",
        "bounce",
        True,
    )


# ---- connection trouble said in words: "connection error/problem", a TLS session that could not
# ---- be negotiated or established -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (421, "4.4.0 connection problem, sorry"),
        (454, "could not establish TLS session with you"),
        (421, "4.7.0 unable to negotiate a secure connection"),
    ],
)
def test_connection_trouble_in_words_is_connection_failure(code: int, text: str) -> None:
    assert verdict(code, text) == ("connection_failure", "defer", False)


# ---- an authentication method named (unknown / unsupported) is authentication ------------------


@pytest.mark.parametrize(
    "text",
    ["5.5.4 unsupported authentication method", "Rejected. Authentication methods offered: none"],
)
def test_authentication_method_is_auth_failure(text: str) -> None:
    assert verdict(504, text) == ("auth_failure", "bounce", False)


# ---- relaying said in other words: mail to remote/external addresses refused, "(relaying) is
# ---- not allowed" -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sending to external domains is not permitted from here",
        "Delivery to non-local recipients denied.",
        "Sorry. Forwarding (relaying) is not allowed.",
    ],
)
def test_mail_to_remote_addresses_refused_is_relay_denied(text: str) -> None:
    assert verdict(554, text) == ("relay_denied", "bounce", False)


# ---- a trap hit (honeypot, spam trap) refuses our side: a block ----------------------------------


@pytest.mark.parametrize(
    "text",
    ["5.7.1 your host was caught in our spam trap", "honeypot hit recorded from 198.51.100.7"],
)
def test_trap_hit_is_spam_block(text: str) -> None:
    assert verdict(550, text) == ("spam_block", "bounce", False)


# ---- line length in the other word order ---------------------------------------------------------


def test_too_long_line_is_the_message_form() -> None:
    assert verdict(500, "5.5.2 too long line in DATA, closing") == ("policy", "bounce", False)


# ---- any other reason behind Postfix's "Recipient address rejected:" prefix is the receiver's
# ---- policy: the prefix names the stage, and must never suppress the recipient -----------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (
            550,
            "5.7.1 <fay@rcpt.example>: Recipient address rejected: caught by rule 17 of our filter",
        ),
        (554, "<fay@rcpt.example>: Recipient address rejected: not during our maintenance window"),
    ],
)
def test_other_rcpt_restriction_is_policy_and_keeps_the_recipient(code: int, text: str) -> None:
    assert verdict(code, text) == ("policy", "bounce", False)


# ---- what the rule above leaves alone: words after the prefix that name the recipient -----------


@pytest.mark.parametrize(
    "text",
    [
        "5.1.1 <gil@rcpt.example>: Recipient address rejected: no such local part here",
        "5.7.1 <gil@rcpt.example>: Recipient address rejected: Invalid-Recipient, check the address",
    ],
)
def test_rcpt_restriction_naming_the_recipient_still_suppresses(text: str) -> None:
    assert verdict(550, text) == ("bad_mailbox", "bounce", True)
