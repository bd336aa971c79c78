"""Issue 12, round 8: classes of replies that the blind part heldout12 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout12.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- a temporary x.2.1 is a per-recipient receiving rate, in any language; a mailbox disabled
# ---- for now says so in words --------------------------------------------------------------

@pytest.mark.parametrize(
    "text",
    [
        "4.2.1 Der Empfänger bekommt gerade zu viele Nachrichten, bitte später senden",
        "4.2.1 L'utente riceve troppi messaggi in questo momento",
        "4.2.1 受信者へのメールが多すぎます",
        "4.2.1 Too much mail for this mailbox right now (Q12)",
    ],
)
def test_temporary_x21_is_a_receiving_rate(text: str) -> None:
    assert verdict(450, text) == ("rate_limit", "defer", False)


def test_temporary_x21_worded_disabled_stays_inactive() -> None:
    assert verdict(450, "4.2.1 mailbox temporarily disabled: someone@example.net")[0] == (
        "inactive_mailbox")


def test_permanent_x21_stays_inactive() -> None:
    assert verdict(550, "5.2.1 Das Konto wurde gesperrt") == ("inactive_mailbox", "bounce", False)


# ---- "temporary" / "try later" in translation is the receiver's trouble, not a policy refusal;
# ---- a specific enhanced code still says which kind ----------------------------------------

@pytest.mark.parametrize(
    "text",
    [
        "4.7.0 Vorübergehender Fehler im Mailsystem. Versuchen Sie es später erneut.",
        "4.7.0 Errore temporaneo, riprova più tardi.",
        "4.7.0 Erro temporário. Tente novamente em alguns minutos.",
        "4.7.0 一時的なエラーです。しばらくしてから再送してください。",
        "4.7.0 Tijdelijk probleem, probeer het later opnieuw",
    ],
)
def test_translated_temporary_trouble(text: str) -> None:
    assert verdict(421, text) == ("other_temporary", "defer", False)


def test_translated_temporary_gives_way_to_a_specific_code() -> None:
    # 4.4.5 is the system's congestion (a rate), whatever the words around it
    assert verdict(421, "4.4.5 Server überlastet, vorübergehend keine Annahme")[0] == "rate_limit"


def test_translated_timeout() -> None:
    assert verdict(451, "4.4.2 Zeitüberschreitung beim Lesen, Verbindung getrennt")[0] == "timeout"


# ---- an IP blocked, in words or in Japanese; a bot ("zombie") or harvesting source ---------

@pytest.mark.parametrize(
    ("code", "text"),
    [
        (421, "4.7.0 お使いの IP アドレスからのメールはブロックされています"),
        (554, "sending host 198.51.100.7 is forbidden here"),
        (450, "Connection deferred: zombie network source (rep)"),
        (550, "Directory harvest attack suspected from your server"),
    ],
)
def test_ip_block_words(code: int, text: str) -> None:
    category, _, suppress = verdict(code, text)
    assert (category, suppress) == ("spam_block", False)


# ---- a DNS lookup that failed for an authentication record is DNS trouble; an authentication
# ---- code says the message was judged --------------------------------------------------------

def test_dmarc_dns_lookup_failure_is_dns() -> None:
    assert verdict(450, "4.4.0 <a@example.org> DMARC record DNS lookup failure, retry") == (
        "dns_failure", "defer", False)


def test_dmarc_dns_failure_with_an_authentication_code_is_authentication() -> None:
    assert verdict(451, "4.7.26 Not authenticated: DMARC failed, SPF DNS lookup error")[0] == (
        "auth_failure")


def test_plain_dns_lookup_failure_unchanged() -> None:
    # no authentication record named: the older rules decide, as before round 8
    assert verdict(451, "4.4.3 DNS lookup failure for example.net, retry")[0] == "dns_failure"


# ---- "host <name> [<ip>] ... unknown" is our client's name, never the recipient's domain ------

@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 host out.sender.invalidtld [192.0.2.8] from unknown TLD #122",
        "5.7.1 host relay.example [203.0.113.4] name not found",
    ],
)
def test_client_host_name_is_ours(text: str) -> None:
    assert verdict(550, text) == ("reverse_dns", "bounce", False)


def test_not_a_valid_helo_name() -> None:
    assert verdict(550, "We refuse: mx.example is not a valid HELO name")[0] == "reverse_dns"


# ---- "unknown or illegal alias": the address is not one the server knows ---------------------

def test_unknown_or_illegal_alias_is_the_recipient() -> None:
    assert verdict(550, "unknown or illegal alias: someone@mail.example.edu") == (
        "bad_mailbox", "bounce", True)
