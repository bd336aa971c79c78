"""Issue 12, round 11: classes of replies that the blind part heldout15 showed read wrongly.

Each test holds one class with made-up texts (placeholder names, varied wording, none copied from
a corpus part) and asserts what costs money: the category, whether the message is bounced or
deferred, and whether the recipient is suppressed. Real replies of these classes are in
tests/data/replies/heldout15.jsonl (each with its source).
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- our IP or server as the subject of what it did ("your IP is sending / generating /
# ---- flooding ...", "excessive rejected recipients", "not allowed from this range", "your mail
# ---- server is rejected by <list>"): a block of our side, never an unknown recipient nor an
# ---- authentication request, whatever words about recipients or authentication follow -------

@pytest.mark.parametrize(
    "text",
    [
        "Your IP has been sending too many rejected recipients",
        "5.7.1 Your IP address is generating too many failed logins, try tomorrow",
        "your server [192.0.2.7] is flooding our mail server",
        "Excessive failed recipients from 192.0.2.7",
        "Mail not permitted from your IP range",
        "5.7.1 Unauthenticated connections not accepted from this network",
        "Your mail server 192.0.2.7 has been rejected by bl.example.net",
    ],
)
def test_our_ip_as_the_subject_is_a_block_that_suppresses_nobody(text: str) -> None:
    assert verdict(554, text) == ("spam_block", "bounce", False)


# ---- the recipient's domain is not served here ("our MX does not point to us", RFC 5321's
# ---- forward-path refused): the receiver will not take mail for that domain; the address is
# ---- not said to be unknown, so nobody is suppressed ---------------------------------------

@pytest.mark.parametrize(
    "text",
    [
        "no such user here: the domain's MX records don't point to us",
        "5.7.1 forward-path domain is not permitted",
        "Forward path <alice@example.org> refused",
    ],
)
def test_a_domain_not_served_here_is_relaying_and_suppresses_nobody(text: str) -> None:
    assert verdict(550, text) == ("relay_denied", "bounce", False)


# ---- the message's content: "viral" traffic/attachments and banned file extensions, also when a
# ---- filter writes them as one identifier ("FORBIDDEN_FILE_EXTENSION") ----------------------

@pytest.mark.parametrize(
    "text",
    [
        "5.7.1 Viral content detected, message refused",
        "5.7.1 rule BANNED_FILE_EXTENSION matched",
        "5.7.1 Rejected: BLOCKED_EXTENSION (.scr)",
    ],
)
def test_viral_content_and_banned_file_extensions_are_content(text: str) -> None:
    assert verdict(554, text) == ("spam_content", "bounce", False)


# ---- a "bogus" envelope sender is ours ------------------------------------------------------

@pytest.mark.parametrize("text", ["Rejected: bogus MAIL FROM domain", "bogus sender <x@example.invalid>"])
def test_a_bogus_sender_is_our_envelope_sender(text: str) -> None:
    assert verdict(553, text) == ("bad_sender", "bounce", False)
