"""What a message needs from the server (kmta.policy.smtpext): SMTPUTF8, 8BITMIME."""
from __future__ import annotations

import pytest

from kmta.policy.smtpext import Needs, mail_options, needs, smtp_address

ASCII = b"Subject: hi\r\n\r\nbody\r\n"
UTF8_BODY = "Subject: hi\r\n\r\nGrüße\r\n".encode()
UTF8_HEAD = "Subject: Grüße\r\n\r\nbody\r\n".encode()


def offers(*names: str):
    return lambda ext: ext in names


@pytest.mark.parametrize(("sender", "rcpt", "data", "want"), [
    ("a@b.example", "c@d.example", ASCII, Needs()),
    ("a@b.example", "ü@d.example", ASCII, Needs(utf8_address=True)),
    ("ü@b.example", "c@d.example", ASCII, Needs(utf8_address=True)),
    ("a@b.example", "c@d.example", UTF8_BODY, Needs(eight_bit=True)),
    ("a@b.example", "c@d.example", UTF8_HEAD, Needs(utf8_headers=True, eight_bit=True)),
])
def test_needs(sender: str, rcpt: str, data: bytes, want: Needs) -> None:
    assert needs(sender, rcpt, data) == want


def test_options_when_offered() -> None:
    assert mail_options(Needs(), offers(), "mx") == ([], None)
    assert mail_options(Needs(utf8_address=True), offers("smtputf8", "8bitmime"), "mx") == (
        ["SMTPUTF8"], None)
    assert mail_options(Needs(eight_bit=True), offers("8bitmime"), "mx") == (
        ["BODY=8BITMIME"], None)
    assert mail_options(Needs(True, True, True), offers("smtputf8", "8bitmime"), "mx") == (
        ["SMTPUTF8", "BODY=8BITMIME"], None)


@pytest.mark.parametrize(("n", "offered", "code", "enhanced", "text"), [
    (Needs(utf8_address=True), (), 550, "5.6.7", "address is not ASCII"),
    (Needs(utf8_address=True, eight_bit=True), ("8bitmime",), 550, "5.6.7", "SMTPUTF8"),
    (Needs(utf8_headers=True, eight_bit=True), ("8bitmime",), 554, "5.6.9", "UTF-8 header"),
    (Needs(eight_bit=True), ("smtputf8",), 554, "5.6.3", "8BITMIME"),
])
def test_bounced_when_not_offered(n: Needs, offered: tuple[str, ...], code: int, enhanced: str,
                                  text: str) -> None:
    opts, reply = mail_options(n, offers(*offered), "mx.example")
    assert opts == [] and reply is not None
    assert (reply.code, reply.enhanced_code, reply.internal) == (code, enhanced, True)
    assert text in reply.text and "mx.example" in reply.text


def test_smtp_address_writes_an_idn_domain_as_its_a_label() -> None:
    assert smtp_address("ann@bücher.example") == "ann@xn--bcher-kva.example"
    assert needs(smtp_address("ann@bücher.example"), "c@d.example", ASCII) == Needs()
    assert smtp_address("ü@bücher.example") == "ü@xn--bcher-kva.example"
    assert smtp_address("ann@example.com") == "ann@example.com"
