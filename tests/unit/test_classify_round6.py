"""Issue 12, round 6: classes of replies that the blind part heldout10 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout10.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- our IP named as the object of a refusal or deferral ("Your mail from <ip> was rejected",
# ---- Apple's [AB01]; "Messages from <ip> permanently deferred", Yahoo), and our IP "filtered"
# ---- until it is registered (Naver's realip, Paran's cleanip "IP_CONTROL", Hanafos) ------------

@pytest.mark.parametrize(
    ("code", "text", "v"),
    [
        (550, "5.7.1 [XY12] Your mail from 192.0.2.44 was rejected. See https://help.example/x", "bounce"),
        (554, "Messages from 198.51.100.3 are rejected for now, see our postmaster page", "bounce"),
        (421, "4.7.1 Messages from 203.0.113.77 permanently deferred", "defer"),
        (451, "Mail from [192.0.2.9] has been deferred, please contact postmaster", "defer"),
        (421, "4.3.2 Your IP(192.0.2.31) is filtered and this connection will be closed", "defer"),
        (550, "You must register your IP at http://register.example.net before sending", "bounce"),
        (550, "Transaction failed (SPAM_SUSPECT:IP_CONTROL) http://clean.example.kr", "bounce"),
    ],
)
def test_our_ip_named_as_refused_or_filtered_is_a_block(code: int, text: str, v: str) -> None:
    assert verdict(code, text) == ("spam_block", v, False)


def test_mail_from_an_address_is_no_ip_block() -> None:
    # the refusal of a sender *address* stays the sender's
    assert verdict(550, "5.1.0 mail from <news@sender.example> rejected: sender unknown")[0] == (
        "bad_sender"
    )


# ---- NetEase / Coremail anti-spam codes (NetEase's published list of reply codes): HL:ICC
# ---- concurrency, HL:IFC frequency, MI:DMC mails per connection, RP:DRC recipients per
# ---- connection, MI:SFQ the sender's quota are rates; HL:REP reputation, HL:MEP forged sender
# ---- domains, DT:RBL a block list, WM:BLI an IP not on the allowed list are blocks ------------

@pytest.mark.parametrize(
    "text",
    [
        "HL:ICC 163 mx12,ExampleId 1700000000 http://mail.163.com/help/help_spam_16.htm",
        "HL:IFC 126 smtp3,ExampleId 1700000000",
        "MI:DMC 163 mx5,ExampleId 1700000000",
        "RP:DRC 163 mx8,ExampleId 1700000000",
        "MI:SFQ 163 smtp9,ExampleId 1700000000",
    ],
)
def test_coremail_rate_codes_are_rates_and_defer(text: str) -> None:
    assert verdict(450, text) == ("rate_limit", "defer", False)


@pytest.mark.parametrize(
    "text",
    [
        "HL:REP 163 mx3,ExampleId 1700000000",
        "HL:MEP 126 mx1,ExampleId 1700000000",
        "DT:RBL 163 mx2,ExampleId 1700000000",
        "WM:BLI 163 mx4,ExampleId 1700000000",
    ],
)
def test_coremail_block_codes_are_blocks(text: str) -> None:
    assert verdict(421, text) == ("spam_block", "defer", False)


# ---- the message's form in Momentum's words: lone CR/LF, CRLF, "see RFC2822 section",
# ---- a required RFC 2822 field ---------------------------------------------------------------

@pytest.mark.parametrize(
    "text",
    [
        "5.6.0 Lone CR or LF in headers (see RFC2822 section 2.2)",
        "Lone LF found in message body",
        "5.6.0 Message not terminated by CR LF . CR LF",
        "5.6.0 Missing required RFC2822 Subject field",
        "message violates RFC 5322, see RFC5322 section 3.6",
    ],
)
def test_message_form_wording_is_policy(text: str) -> None:
    assert verdict(550, text) == ("policy", "bounce", False)


# ---- a command's syntax named in words says whose address it is -----------------------------

def test_mail_from_syntax_error_is_our_sender() -> None:
    assert verdict(501, "5.5.2 MAIL FROM syntax error") == ("bad_sender", "bounce", False)
    assert verdict(501, "MAIL FROM: syntax error in address") == ("bad_sender", "bounce", False)


def test_rcpt_to_syntax_error_is_a_bad_recipient_address() -> None:
    assert verdict(501, "5.5.2 RCPT TO syntax error") == ("bad_mailbox", "bounce", True)
    assert verdict(501, "RCPT TO: syntax error (invalid address)")[0] == "bad_mailbox"


def test_a_4xx_rcpt_syntax_error_never_suppresses() -> None:
    _, v, suppress = verdict(451, "4.5.2 RCPT TO syntax error, try again")
    assert (v, suppress) == ("defer", False)


# ---- an inactive mailbox in short words ("Inactive mbox") is no unknown user, even as 5.1.1 -----

@pytest.mark.parametrize(
    "text", ["5.1.1 Inactive mbox", "5.1.1 <address>: disabled mbox", "suspended mbox, sorry"]
)
def test_inactive_mbox_is_inactive_and_keeps(text: str) -> None:
    assert verdict(550, text) == ("inactive_mailbox", "bounce", False)


# ---- failed authentication in other words ("too much fail authentication", NetEase) ---------------

@pytest.mark.parametrize(
    ("code", "text"),
    [
        (451, "Requested mail action not taken: too much fail authentication"),
        (535, "fail authentication for this account"),
        (454, "4.7.0 too many failed auth attempts, try later"),
    ],
)
def test_failed_authentication_wording(code: int, text: str) -> None:
    assert verdict(code, text)[0] == "auth_failure"


# ---- the server did not answer: no banner, no response to a command (Momentum's outcomes) --------

@pytest.mark.parametrize(
    "text",
    [
        "4.4.2 [internal] no banner",
        "4.4.2 no greeting from mx.example.net",
        "4.4.2 [internal] no RCPT TO response",
        "4.4.2 no MAIL FROM response after 300 seconds",
    ],
)
def test_no_banner_or_response_is_a_timeout(text: str) -> None:
    assert verdict(451, text) == ("timeout", "defer", False)


def test_tls_negotiation_failure_is_the_connection() -> None:
    assert verdict(451, "4.7.5 [internal] TLS negotiation failed") == (
        "connection_failure",
        "defer",
        False,
    )
    assert verdict(421, "4.7.0 TLS handshake failed, closing")[0] == "connection_failure"


# ---- a session ended over our commands, in the singular ("Too many bad command.") --------------

@pytest.mark.parametrize(
    ("code", "text", "category"),
    [
        (421, "4.7.0 Too many bad command.", "other_temporary"),
        (421, "too many invalid command, bye", "other_temporary"),
        (554, "5.7.0 Too many error, closing connection", "other_permanent"),
    ],
)
def test_session_errors_singular(code: int, text: str, category: str) -> None:
    assert verdict(code, text)[0] == category


# ---- the receiver's mail system full (RFC 3463 X.3.1) is not the recipient's mailbox ---------------

def test_mail_system_storage_full_is_the_receiver() -> None:
    assert verdict(452, "4.3.1 Mail system storage is full.") == ("other_temporary", "defer", False)
    # the recipient's storage stays a full mailbox
    assert verdict(452, "4.2.2 User storage is full")[0] == "mailbox_full"
