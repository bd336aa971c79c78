"""Issue 12, round 5: classes of replies that the blind part heldout9 (and the parts before it)
showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/.
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- Postfix's RBL reply template: "$rbl_class [$rbl_what] blocked using $rbl_domain" ------------
# (postconf(5) default_rbl_reply). The class is our client host, sender domain or HELO name,
# whatever the list is called: a URI block list checked against our host name is no spam content.

@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 Service unavailable; Client host [out3.sender.example] blocked using black.uribl.com",
        "5.7.1 Service unavailable; Sender address [news@sender.example] blocked using multi.surbl.org",
        "5.7.1 Service unavailable; Helo command [out3.sender.example] blocked using dbl.example.net",
        "5.7.1 Service unavailable; Reverse client host [out3.sender.example] blocked using "
        "rhsbl.example.org; listed for abuse",
    ],
)
def test_postfix_rbl_template_is_a_block_of_our_side_whatever_the_list(text: str) -> None:
    assert verdict(554, text) == ("spam_block", "bounce", False)


def test_postfix_rbl_template_as_a_4xx_defers() -> None:
    assert verdict(450, "4.7.1 Service unavailable; Client host [192.0.2.7] blocked using "
                        "bl.example.org") == ("spam_block", "defer", False)


def test_a_listed_url_in_the_message_is_still_content() -> None:
    # without the template's class, a URI list names the message's links
    assert verdict(550, "5.7.1 Message rejected: URL listed in black.uribl.com")[0] == "spam_content"


# ---- our IP asserted to be a spam source wins over the relay / sender words around it -------------

@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 <mx.sender.example[192.0.2.8]>: Client host rejected: Relaying denied - your IP "
        "identified as spammer",
        "5.7.1 Sender address rejected: sending host is known as a spam source",
        "Relay access denied: address 192.0.2.8 has been classified as a spam sender",
        "5.7.1 Your server was flagged as a spammer. Relaying refused",
    ],
)
def test_ip_asserted_as_spammer_is_spam_block(text: str) -> None:
    assert verdict(553, text) == ("spam_block", "bounce", False)


# ---- anti-spoofing policies are policy (Mimecast's "Anti-Spoofing policy"), not authentication ------

@pytest.mark.parametrize(
    "text",
    [
        "Rejected by header based Anti-Spoofing policy: jane@rcpt.example",
        "Message blocked: anti-spoofing policy of the receiving organisation",
        "Rejecting spoofed mail from an external source",
        "Inbound spoofing protection: message not accepted",
    ],
)
def test_anti_spoofing_policy_is_policy(text: str) -> None:
    assert verdict(550, text) == ("policy", "bounce", False)


def test_a_spoofed_envelope_sender_is_the_sender() -> None:
    assert verdict(550, "Spoofed envelope sender refused") == ("bad_sender", "bounce", False)


def test_spf_named_with_spoofing_stays_authentication() -> None:
    assert verdict(550, "5.7.23 SPF check failed: possible spoofing")[0] == "auth_failure"


# ---- a session ended over our unauthenticated commands (Gmail's, nodemailer smtp-server's) --------

@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (421, "Error: too many unauthenticated commands", ("other_temporary", "defer", False)),
        (421, "4.7.0 Too many unauthenticated commands, closing", ("other_temporary", "defer", False)),
        (554, "5.7.0 Too many unauthenticated commands", ("other_permanent", "bounce", False)),
    ],
)
def test_too_many_unauthenticated_commands_is_the_session(code: int, text: str,
                                                           expected: tuple[str, str, bool]) -> None:
    assert verdict(code, text) == expected


def test_authentication_required_is_still_auth() -> None:
    assert verdict(530, "5.7.0 Authentication required")[0] == "auth_failure"
    assert verdict(550, "Unauthenticated mail is not accepted here")[0] == "auth_failure"


# ---- a connection refused to our system (Exchange's connection filter) ----------------------------

@pytest.mark.parametrize(
    "text",
    [
        "#5.7.1 Your access to submit messages to this e-mail system has been denied",
        "5.7.1 Your access to this mail system has been rejected",
        "Your access to our messaging system has been refused.",
    ],
)
def test_access_to_the_mail_system_refused_is_a_block_of_our_ip(text: str) -> None:
    assert verdict(550, text) == ("spam_block", "bounce", False)


# ---- MAIL FROM's own syntax named in words: the envelope sender, over a protocol code --------------

@pytest.mark.parametrize(
    "text",
    [
        "5.5.4 Invalid FROM: missing closing bracket",
        "5.5.4 Invalid MAIL FROM: parameter not recognised",
        "5.5.2 Malformed sender address syntax",
    ],
)
def test_mail_from_syntax_is_the_sender(text: str) -> None:
    assert verdict(501, text) == ("bad_sender", "bounce", False)


def test_recipient_syntax_with_a_protocol_code_is_no_sender() -> None:
    assert verdict(501, "5.5.4 Invalid TO: missing closing bracket")[0] != "bad_sender"


# ---- the message's form: a header field named as missing or required -------------------------------

@pytest.mark.parametrize(
    "text",
    [
        "No Message-ID field given",
        "Missing Date field in message",
        "Required From field missing",
        "Message-ID header field is required",
    ],
)
def test_a_header_field_missing_is_the_message_form(text: str) -> None:
    assert verdict(554, text) == ("policy", "bounce", False)


# ---- qmail's DSN trailer "(#5.1.1)": the server chose RFC 3463 5.1.1 for this recipient ------------
# (qmail-smtpd, vpopmail, qpsmtpd's rcpt plugins). Generic words with it still name an address that
# does not exist, unless the words name our side.

@pytest.mark.parametrize(
    "text",
    [
        "mail for <address> refused here (#5.1.1)",
        "delivery to jane@rcpt.example not permitted (#5.1.1)",
        "sorry, rejected (#5.1.1)",
    ],
)
def test_qmail_trailer_5_1_1_suppresses(text: str) -> None:
    assert verdict(550, text) == ("bad_mailbox", "bounce", True)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("your host 192.0.2.9 is blacklisted (#5.1.1)", "spam_block"),
        ("sender address rejected: domain not found (#5.1.1)", "bad_sender"),
        ("sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", "relay_denied"),
        ("mail for <address> refused here (#5.7.1)", "policy"),
    ],
)
def test_qmail_trailer_never_outweighs_our_side(text: str, category: str) -> None:
    got, _, suppress = verdict(553, text)
    assert (got, suppress) == (category, False)


def test_a_4xx_with_the_trailer_defers_and_keeps() -> None:
    category, v, suppress = verdict(450, "mailbox busy, try later (#4.1.1)")
    assert (v, suppress) == ("defer", False) and category != "bad_mailbox"


def test_too_many_authentication_errors_stays_authentication() -> None:
    # the session family yields to failed credentials named as the errors
    assert verdict(454, "4.7.0 Too many authentication errors, closing")[0] == "auth_failure"
    assert verdict(535, "5.7.8 Too many authentication errors")[0] == "auth_failure"
