"""Issue 12, round 20: the families study's one general class, non-English replies.

The blind misses of parts 20-24 read together fall into a few families (docs/operations/
classify.md, round 20); the largest that no rule read was the recipient's state said in another
European language, each round having added one language's phrase for one class. These tests hold
the family with made-up texts (placeholder names, varied wording, none copied from a corpus part)
and assert what costs money: the category, bounce or defer, and whether the recipient is
suppressed. Real replies of the family are in tests/data/replies/heldout24.jsonl.
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- the recipient unknown, in Italian, Spanish, Portuguese, French, German, Polish, Czech ----------


@pytest.mark.parametrize(
    "text",
    [
        "utente sconosciuto: mario@example.it",
        "Indirizzo destinatario errato",
        "usuario desconocido <juan@example.es>",
        "la dirección no existe",
        "destinatário inexistente",
        "adresse destinataire inexistante",
        "Empfänger existiert nicht",
        "Nie ma takiego użytkownika",
        "adresat nie istnieje",
        "uživatel neexistuje",
    ],
)
def test_foreign_unknown_recipient_suppresses(text: str) -> None:
    assert verdict(550, text) == ("bad_mailbox", "bounce", True)


# ---- the account inactive or expired --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "La cuenta ha expirado",
        "buzón suspendido por falta de uso",
        "questa casella e' stata disattivata",
        "account sospeso per inattività",
        "a conta foi desativada",
        "konto zostało zawieszone",
        "Das Konto wurde stillgelegt",
    ],
)
def test_foreign_inactive_account_is_inactive(text: str) -> None:
    assert verdict(550, text) == ("inactive_mailbox", "bounce", False)


# ---- the mailbox full -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (552, "Postfach ist voll"),
        (552, "casella piena"),
        (452, "el buzón está lleno"),
        (552, "caixa postal cheia"),
        (552, "boîte aux lettres pleine"),
        (552, "skrzynka jest pełna"),
    ],
)
def test_foreign_full_mailbox_is_full(code: int, text: str) -> None:
    category, action, suppress = verdict(code, text)
    assert (category, suppress) == ("mailbox_full", False)
    assert action == ("defer" if code < 500 else "bounce")


# ---- the limits of the family ---------------------------------------------------------------------


def test_unknown_or_deactivated_stays_unknown() -> None:
    # "unknown or deactivated": the address may be gone, as the English rule reads it
    assert verdict(550, "Empfänger unbekannt oder Postfach deaktiviert") == (
        "bad_mailbox",
        "bounce",
        True,
    )


def test_foreign_unknown_sender_domain_is_not_the_recipient() -> None:
    # a refused sender in German is no unknown recipient: nothing is suppressed
    category, _, suppress = verdict(550, "Absender abgelehnt: Domain des Absenders unbekannt")
    assert category != "bad_mailbox" and suppress is False
