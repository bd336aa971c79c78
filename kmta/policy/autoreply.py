"""Automatic replies that are not bounces (RFC 3834): vacation / out-of-office notices and
challenge-response requests ("please confirm you are human"). RFC 3834 §4 sends them to the
envelope sender, so they reach the VERP address like bounces do; they must never count as one.

Checked after the report types (a DSN carries ``Auto-Submitted: auto-replied`` too). Pure:
stdlib only.
"""
from __future__ import annotations

import re
from email.message import Message

__all__ = ["AUTO_GENERATED", "CHALLENGE", "VACATION", "kind_of"]

VACATION = "vacation"
CHALLENGE = "challenge"
AUTO_GENERATED = "auto-generated"

# Subjects of out-of-office replies in the major clients' languages (Outlook/Exchange
# "Automatic reply:", Gmail's vacation responder keeps the user's subject: the header tells).
_VACATION_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto(?:matic)?[- ]?(?:reply|response)|out of (?:the )?office|"
    r"away from (?:my|the) office|vacation|on holiday|abwesenheitsnotiz|automatische antwort|"
    r"r[ée]ponse automatique|absence|respuesta autom[áa]tica|fuera de la oficina|"
    r"risposta automatica|automatisch antwoord|afwezig|автоответ|自动回复)",
    re.IGNORECASE)
# Challenge-response systems (Boxbe, SpamArrest, Mailmoat, ChoiceMail, EarthLink
# spamBlocker, Qurb): they hold the mail until the sender clicks or replies.
_CHALLENGE = re.compile(
    r"(please confirm (?:your|that you)|verify (?:that )?you are (?:a )?(?:human|real)|"
    r"confirm you are a real person|challenge[- ]response|sender verification|"
    r"spam ?arrest|boxbe|mailmoat|choicemail|spamblocker|awaiting your (?:approval|"
    r"verification)|approved senders? list|whitelist request|"
    r"my (?:spam|e-?mail) filter (?:requires|needs))", re.IGNORECASE)
_CHALLENGE_HEADERS = ("x-boxbe-", "x-spamarrest-", "x-challenge", "x-cr-")
_VACATION_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-vacation")


def kind_of(msg: Message, text: str) -> str | None:
    """``vacation``, ``challenge`` or ``auto-generated`` for an automatic message; None for a
    message a person (or an unknown robot) wrote. ``text`` is its readable text."""
    names = {k.lower() for k in msg}
    subject = " ".join(str(msg.get("Subject", "")).split())
    if any(n.startswith(_CHALLENGE_HEADERS) for n in names) or _CHALLENGE.search(
            subject + "\n" + text[:2000]):
        return CHALLENGE
    auto = str(msg.get("Auto-Submitted", "no")).split(";")[0].strip().lower()
    precedence = str(msg.get("Precedence", "")).strip().lower()
    if (auto == "auto-replied" or any(n in names for n in _VACATION_HEADERS)
            or precedence == "auto_reply" or _VACATION_SUBJECT.search(subject)):
        return VACATION
    if auto not in ("", "no") or precedence in ("bulk", "junk", "list"):
        return AUTO_GENERATED
    return None
