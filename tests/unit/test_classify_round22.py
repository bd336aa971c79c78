"""Issue 12, round 22: part 25's misses by wording classes, and part 26's (below).

A full mailbox said with the adjective first ("full inbox") or as a mail folder over its allowed
quota; a relay that could not connect to its next hop, whatever its basic code. Made-up texts
(placeholder names); each asserts the category, bounce or defer, and whether the recipient is
suppressed.
"""

from __future__ import annotations

import pytest

from tests.unit.classify_rounds import verdict

# ---- a full mailbox: the adjective first, a mail folder over its quota -----------------------------


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (452, "4.2.2 full inbox for r@example.net", ("mailbox_full", "defer", False)),
        (552, "Recipient has a full mail box", ("mailbox_full", "bounce", False)),
        (550, "Delivery failed: full mailfolder", ("mailbox_full", "bounce", False)),
        (552, "The mail folder of r@example.net is over the allowed quota", ("mailbox_full", "bounce", False)),
        (552, "Mailbox of this user is over its storage quota", ("mailbox_full", "bounce", False)),
        (452, "User r@example.net is over the permitted quota", ("mailbox_full", "defer", False)),
    ],
)
def test_full_mailbox_wordings(code: int, text: str, expected: tuple[str, str, bool]) -> None:
    assert verdict(code, text) == expected


def test_a_sending_quota_is_no_full_mailbox() -> None:
    # the quota of messages an account may send is a rate, not the recipient's storage
    category, _, suppress = verdict(550, "User s@example.org is over the allowed quota of messages per day")
    assert category != "mailbox_full"
    assert not suppress


# ---- a relay that could not reach its next hop --------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (554, "could not connect and send the mail to 192.0.2.7"),
        (550, "Unable to connect to mx.example.net"),
        (554, "5.0.0 Failed to establish a connection with mail.example.net"),
        (451, "relay failed to connect to 192.0.2.7"),
    ],
)
def test_relay_could_not_connect(code: int, text: str) -> None:
    category, _, suppress = verdict(code, text)
    assert category == "connection_failure"
    assert not suppress


@pytest.mark.parametrize(
    ("code", "text", "category"),
    [
        (554, "5.7.1 You are not allowed to connect", "spam_block"),
        (451, "4.3.2 can not connect to queue", "other_temporary"),
    ],
)
def test_connect_words_that_are_no_connection_failure(code: int, text: str, category: str) -> None:
    assert verdict(code, text)[0] == category


def test_a_time_ban_is_no_connection_failure() -> None:
    assert verdict(550, "You cannot connect for 3 more days.")[0] != "connection_failure"


# ---- part 26's misses, by wording classes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        # an account that receives again only once its owner logs in
        (554, "5.7.1 User r@example.net must log in to enable receiving mail", ("inactive_mailbox", "bounce", False)),
        (550, "Recipient should sign in to resume receiving messages", ("inactive_mailbox", "bounce", False)),
        # "non-existent", misspelt or after its noun
        (550, "Recipient domain is non-existant", ("bad_domain", "bounce", True)),
        (550, "RCPT address has nonexistent domain example.invalid", ("bad_domain", "bounce", True)),
        (550, "Mailbox nonexistent", ("bad_mailbox", "bounce", True)),
        (553, "Recipient is non-existent", ("bad_mailbox", "bounce", True)),
        # the server's own x.2.2 with only generic "try later" words
        (450, "4.2.2 r@example.net temporary failure, retry later", ("mailbox_full", "defer", False)),
        # spam from our IP is a block of our side, not this message's content
        (554, "Too much spam from your IP", ("spam_block", "bounce", False)),
        (550, "5.7.1 Excessive spam coming from this host", ("spam_block", "bounce", False)),
        # content judged by its links or its adult material
        (554, "Links were found that point to phishing sites", ("spam_content", "bounce", False)),
        (550, "Message refused: adult-oriented content", ("spam_content", "bounce", False)),
        # our message's form
        (550, "No Date header provided", ("policy", "bounce", False)),
        (501, "Message contains defects", ("policy", "bounce", False)),
    ],
)
def test_part26_wording_classes(code: int, text: str, expected: tuple[str, str, bool]) -> None:
    assert verdict(code, text) == expected


def test_a_sender_domain_that_does_not_exist_stays_our_sender() -> None:
    # the sender prefix still decides: the recipient is never suppressed for our own domain
    category, _, suppress = verdict(550, "5.1.8 <s@example.org>: Sender address rejected: non-existent domain")
    assert category == "bad_sender"
    assert not suppress


# ---- part 26's second batch, by wording classes ----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "mailbox r@example.net unavailable", ("bad_mailbox", "bounce", True)),
        (550, "Mailbox for r@example.net is unavailable", ("bad_mailbox", "bounce", True)),
        (552, "r@example.net mail receiving disabled", ("inactive_mailbox", "bounce", False)),
        (550, "e-mail receiving has been suspended for this account", ("inactive_mailbox", "bounce", False)),
        (553, "relaying of messages is not permitted", ("relay_denied", "bounce", False)),
        (550, "Quota is over for r@example.net", ("mailbox_full", "bounce", False)),
        (552, "user is overquote", ("mailbox_full", "bounce", False)),
        (554, "5.0.0 remote server disconnected", ("connection_failure", "bounce", False)),
        (554, "mx.example.net Connection refused from 192.0.2.7", ("spam_block", "bounce", False)),
    ],
)
def test_part26_second_batch_wording_classes(code: int, text: str, expected: tuple[str, str, bool]) -> None:
    assert verdict(code, text) == expected


def test_a_refused_connection_under_4xx_stays_the_connections_trouble() -> None:
    assert verdict(451, "4.4.0 connection refused from the next hop")[0] == "connection_failure"
