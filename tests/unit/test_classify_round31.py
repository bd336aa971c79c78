"""Issue 12, round 31: part 34's blind misses (sendmail's srvrsmtp.c, deliver.c, collect.c,
parseaddr.c, recipient.c and map.c replies).

A 4xx that names one of the receiver's own files, maps or tables failing is its own trouble, not a
policy, a network timeout or an unknown recipient. Characters an address may not hold name the
address, whose the enhanced code says. An address refused for its UTF-8 is the internationalised
address refusal, not an unknown address. A command too long sent as a 4xx is a temporary refusal.
A size said to be invalid is a malformed SIZE parameter. AUTH aborted, not offered, or answered
with data that is no base64 is the AUTH exchange. A bare 501 "Invalid domain name" is the HELO
argument. Made-up texts (placeholder names and documentation addresses).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- the receiver's own files and tables ---------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (451, "4.3.0 Could not open /var/spool/lists/members: Permission denied"),
        (450, "4.2.0 write error on /var/mail/carol: timeout"),
        (451, "4.3.0 ldap_map_lookup(users): connection refused"),
        (451, "4.3.5 Unable to find table virtusers: No such map"),
        (452, "4.3.1 Cannot read /var/spool/lists/staff: permission denied"),
    ],
)
def test_a_4xx_naming_the_receivers_file_or_map_is_its_trouble(code: int, text: str) -> None:
    assert verdict(code, text) == ("other_temporary", "defer", False)


def test_a_5xx_no_such_user_is_still_unknown() -> None:
    # the rule is for 4xx and files or maps: an unknown user keeps suppressing
    assert verdict(550, "5.1.1 No such user carol@example.org")[0] == "bad_mailbox"


# ---- addresses ---------------------------------------------------------------------------------


def test_characters_in_the_recipients_address_name_the_address() -> None:
    assert verdict(501, '5.1.3 8bit characters in recipient address "d\u00e4ve@example.org"') == (
        "bad_mailbox",
        "bounce",
        True,
    )


def test_characters_in_our_senders_address_never_suppress() -> None:
    assert verdict(501, '5.1.7 Non-ASCII characters in sender address "\u00e4l@example.org"') == (
        "bad_sender",
        "bounce",
        False,
    )


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (553, "5.6.7 <carol@example.org>: Mailbox is invalid UTF-8"),
        (550, "5.6.7 Local-part requires SMTPUTF8"),
    ],
)
def test_an_address_refused_for_its_utf8_is_no_unknown_address(code: int, text: str) -> None:
    assert verdict(code, text) == ("other_permanent", "bounce", False)


# ---- protocol -------------------------------------------------------------------------------------


def test_a_command_too_long_as_a_4xx_is_a_temporary_refusal() -> None:
    assert verdict(421, "4.7.0 relay.example.net Command line too long, closing") == (
        "other_temporary",
        "defer",
        False,
    )


def test_a_size_said_to_be_invalid_is_a_malformed_parameter() -> None:
    assert verdict(552, "5.2.3 Size is malformed") == ("other_permanent", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (501, "5.0.0 AUTH cancelled by client"),
        (503, "5.3.3 AUTH is not offered on this port"),
        (501, "5.5.4 Unable to base64-decode response"),
    ],
)
def test_the_auth_exchange_is_authentication(code: int, text: str) -> None:
    assert verdict(code, text) == ("auth_failure", "bounce", False)


def test_auth_out_of_sequence_stays_a_protocol_error() -> None:
    assert verdict(503, "5.5.0 AUTH not allowed during a mail transaction")[0] == "other_permanent"


def test_a_bare_501_invalid_domain_name_is_our_helo_and_never_suppresses() -> None:
    assert verdict(501, "Invalid domain name.") == ("reverse_dns", "bounce", False)


def test_an_invalid_domain_name_with_an_address_stays_the_recipients() -> None:
    assert verdict(553, "5.1.2 <carol@example.invalid>... Invalid domain name")[0] == "bad_domain"
