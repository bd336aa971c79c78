"""Issue 12, round 24: part 26's third batch's blind misses, by wording classes, and AOL's DYN:T1.

A spam filter's score said as "the message scored" is the message's content; AOL's (DYN:T1) is a
rate; an account with no activity for a time is inactive; mail sent "to a bogus / fake address"
names an unknown recipient; Postfix's "Client host rejected:" with a spam word refuses our host; a
country banned is the receiver's policy; "no DNS A-data / MX data returned" under 4xx is a DNS
failure; under 4xx an account "unavailable" is the receiver's trouble for now; a 521 or 556 that
names an error is no domain that accepts no mail. From the fourth batch: Postfix's "Server
configuration problem" under 4xx is the receiver's trouble; mail "from <address>" not allowed is
our sender; sensitive or forbidden words judge the content; AOL's (DNS:NR) is our reverse DNS.
From the fifth batch: our outgoing mail disabled is our sender; an account "out of quota" is full;
"Sender IP must resolve" is our reverse DNS; "unknown destination address" is unknown.
Made-up texts (placeholder names); each asserts
the category, bounce or defer, and whether the recipient is suppressed.
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- a spam filter's score -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "Your message scored 14.2, rejected"),
        (554, "5.7.1 Message scored too high"),
        (550, "Rejected: scored 9.1 points"),
    ],
)
def test_the_message_scored_is_content(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_content", "bounce", False)


# ---- AOL's DYN:T1: a rate -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "4.7.1 : (DYN:T1) https://postmaster.example.net/error-codes",
        "(DYN:T1) Service not available",
    ],
)
def test_aol_dyn_t1_is_a_rate(text: str) -> None:
    assert verdict(421, text) == ("rate_limit", "defer", False)


# ---- no activity for a time: an inactive account ----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.2.1 No login activity for 12 months"),
        (550, "Mailbox has not been accessed since 2019"),
        (554, "NOACTIVITY r@example.net"),
    ],
)
def test_no_activity_is_inactive(code: int, text: str) -> None:
    assert verdict(code, text) == ("inactive_mailbox", "bounce", False)


# ---- sent to a bogus address: the recipient does not exist -----------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "You tried to send mail to a fake address"),
        (554, "Attempt to deliver to a fictitious mailbox"),
        (550, "bogus recipient r@example.net"),
    ],
)
def test_a_bogus_recipient_address_is_unknown(code: int, text: str) -> None:
    assert verdict(code, text) == ("bad_mailbox", "bounce", True)


def test_a_bogus_sender_address_stays_ours() -> None:
    category, _, suppress = verdict(553, "5.1.8 Sender address rejected: bogus sender address")
    assert category == "bad_sender"
    assert not suppress


# ---- Postfix's client-host prefix with a spam word: our host refused --------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "5.7.1 <mta.example.org[192.0.2.7]>: Client host rejected: SPAM_SOURCE"),
        (550, "Client host rejected: known spammer"),
        (553, "Client host rejected: abusive sender network"),
    ],
)
def test_client_host_rejected_for_spam_is_a_block(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_block", "bounce", False)


def test_client_host_rejected_for_its_name_stays_reverse_dns() -> None:
    assert verdict(550, "5.7.1 Client host rejected: cannot find your hostname")[0] == "reverse_dns"


# ---- a country banned: the receiver's policy --------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "Sender's country is blocked"),
        (550, "5.7.1 Your country is not allowed to send here"),
        (550, "Countries like yours are banned"),
    ],
)
def test_a_country_banned_is_policy(code: int, text: str) -> None:
    assert verdict(code, text) == ("policy", "bounce", False)


# ---- no DNS data returned under 4xx: a DNS failure --------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "mx.example.net no DNS A-data returned",
        "No MX data returned for example.net",
        "4.4.3 no AAAA records found for mx.example.net",
    ],
)
def test_no_dns_data_returned_is_dns_failure(text: str) -> None:
    assert verdict(451, text) == ("dns_failure", "defer", False)


# ---- an account unavailable under 4xx: the receiver's trouble for now ------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "4.7.1 Recipient account is unavailable",
        "4.7.0 r@example.net account currently not available",
    ],
)
def test_an_account_unavailable_under_4xx_is_temporary(text: str) -> None:
    assert verdict(421, text) == ("other_temporary", "defer", False)


# ---- 521 / 556 naming an error: not a domain that accepts no mail ----------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (521, "5.3.0 Backend error, contact support"),
        (556, "Internal failure"),
    ],
)
def test_521_556_with_an_error_does_not_suppress(code: int, text: str) -> None:
    assert verdict(code, text) == ("other_permanent", "bounce", False)


def test_521_without_an_error_is_still_a_domain_without_mail() -> None:
    assert verdict(521, "5.3.2 example.net does not accept mail") == ("bad_domain", "bounce", True)


# ---- fourth batch: Postfix's "Server configuration problem" under 4xx, whatever the prefix --------


@pytest.mark.parametrize(
    "text",
    [
        "4.3.5 <s@example.org>: Sender address rejected: Server configuration problem",
        "4.3.5 <r@example.net>: Recipient address rejected: Server configuration error",
        "4.3.5 Client host rejected: server config failure",
    ],
)
def test_server_configuration_problem_is_temporary(text: str) -> None:
    assert verdict(451, text) == ("other_temporary", "defer", False)


# ---- mail from <address> refused: our sender -------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (553, "Mail from s@example.org not allowed"),
        (550, "Messages from <s@example.org> are refused"),
        (554, "5.7.1 E-mails from s@example.org... prohibited"),
    ],
)
def test_mail_from_an_address_refused_is_our_sender(code: int, text: str) -> None:
    assert verdict(code, text) == ("bad_sender", "bounce", False)


@pytest.mark.parametrize(
    ("code", "text", "category"),
    [
        (554, "Mail from s@example.org rejected for policy reasons.", "policy"),
        (554, "Mail from 192.0.2.7 refused", "spam_block"),
    ],
)
def test_mail_from_with_a_reason_or_an_ip(code: int, text: str, category: str) -> None:
    assert verdict(code, text)[0] == category


# ---- sensitive or forbidden words: the message's content -------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (553, "5.7.1 Forbidden words detected in subject"),
        (550, "Message contains banned keywords"),
        (554, "Offensive phrases"),
    ],
)
def test_forbidden_words_are_content(code: int, text: str) -> None:
    assert verdict(code, text) == ("spam_content", "bounce", False)


# ---- AOL's DNS:NR: our reverse DNS -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "fate"),
    [
        (421, "4.7.1 : (DNS:NR) https://postmaster.example.net/errors", "defer"),
        (554, "(DNS:NR)", "bounce"),
    ],
)
def test_aol_dns_nr_is_reverse_dns(code: int, text: str, fate: str) -> None:
    assert verdict(code, text) == ("reverse_dns", fate, False)


# ---- fifth batch: our outgoing mail disabled: our sender -----------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Domain example.org has outgoing email disabled",
        "Outgoing mail is suspended for this account",
    ],
)
def test_outgoing_mail_disabled_is_our_sender(text: str) -> None:
    assert verdict(550, text) == ("bad_sender", "bounce", False)


def test_a_recipient_account_disabled_stays_inactive() -> None:
    assert verdict(550, "Recipient account is disabled")[0] == "inactive_mailbox"


# ---- out of quota: a full mailbox ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "fate"),
    [
        (451, "Account r@example.net out of quota. Try later", "defer"),
        (552, "Mailbox out of storage quota", "bounce"),
    ],
)
def test_out_of_quota_is_a_full_mailbox(code: int, text: str, fate: str) -> None:
    assert verdict(code, text) == ("mailbox_full", fate, False)


# ---- our IP that must resolve: reverse DNS --------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (501, "5.7.1 Sender IP must resolve"),
        (550, "Your IP address does not resolve to a host name"),
        (554, "Connecting host failed to resolve"),
    ],
)
def test_our_ip_that_must_resolve_is_reverse_dns(code: int, text: str) -> None:
    assert verdict(code, text) == ("reverse_dns", "bounce", False)


# ---- the adjective first: an unknown address -----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Unknown destination address",
        "5.1.1 unknown local user r@example.net",
        "unknown e-mail account",
    ],
)
def test_unknown_destination_address_is_unknown(text: str) -> None:
    assert verdict(550, text) == ("bad_mailbox", "bounce", True)
