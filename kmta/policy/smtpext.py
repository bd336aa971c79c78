"""What a message needs from the receiving server (SMTPUTF8, 8BITMIME) and the MAIL FROM
parameters that follow from what the server offers.

- A non-ASCII envelope address or header (RFC 6531, RFC 6532) needs ``SMTPUTF8``; when the
  server does not offer it the message is bounced (5.6.7): downgrading an address is not
  defined (RFC 6530 section 8 leaves it to the sender), and delivering to an ASCII
  approximation would deliver to someone else.
- 8-bit content (raw ``data`` with UTF-8 in its body, and the text parts kmta composes from
  non-ASCII text: ``Content-Transfer-Encoding: 8bit``, never re-encoded while their lines fit
  in 998 octets) goes with ``BODY=8BITMIME`` (RFC 6152). When the server does not offer it the
  message is bounced (5.6.3) rather than re-encoded: the body was encoded once, at routing, and
  signed there (DKIM); re-encoding it at the sender would re-parse and rewrite its parts, break
  that signature and cost a copy per attempt. Servers without 8BITMIME are rare today (the
  large providers and Postfix offer it), and the bounce says what to do (send it 7-bit
  encoded).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kmta.errors import InputError
from kmta.policy.addresses import normalize_domain
from kmta.policy.reply import Reply

__all__ = ["Needs", "mail_options", "needs", "smtp_address"]


@dataclass(frozen=True)
class Needs:
    utf8_address: bool = False
    utf8_headers: bool = False
    eight_bit: bool = False


def smtp_address(addr: str) -> str:
    """``addr`` for MAIL FROM / RCPT TO: an internationalized domain as its A-label, so only a
    non-ASCII local part needs SMTPUTF8 (``ann@bücher.example`` ->
    ``ann@xn--bcher-kva.example``)."""
    if addr.isascii():
        return addr
    local, _, domain = addr.rpartition("@")
    try:
        return f"{local}@{normalize_domain(domain)}"
    except InputError:
        return addr


def needs(sender: str, rcpt: str, data: bytes) -> Needs:
    """What ``data`` sent from ``sender`` to ``rcpt`` needs of the server."""
    if data.isascii():
        return Needs(utf8_address=not (sender.isascii() and rcpt.isascii()))
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    return Needs(utf8_address=not (sender.isascii() and rcpt.isascii()),
                 utf8_headers=not head.isascii(), eight_bit=True)


def mail_options(n: Needs, offers: Callable[[str], bool], mx: str
                 ) -> tuple[list[str], Reply | None]:
    """``(MAIL FROM parameters, None)``, or ``([], reply)`` when the server at ``mx`` lacks an
    extension the message needs; ``offers(name)`` tells whether its EHLO listed ``name``."""
    opts: list[str] = []
    if n.utf8_address or n.utf8_headers:
        if not offers("smtputf8"):
            if n.utf8_address:
                return [], Reply(code=550, enhanced_code="5.6.7", internal=True, text=(
                    f"{mx} does not offer SMTPUTF8, and the sender or recipient address is "
                    "not ASCII (RFC 6531)"))
            return [], Reply(code=554, enhanced_code="5.6.9", internal=True, text=(
                f"{mx} does not offer SMTPUTF8, and the message has UTF-8 header fields "
                "(RFC 6532): encode them (RFC 2047) to send it there"))
        opts.append("SMTPUTF8")
    if n.eight_bit:
        if not offers("8bitmime"):
            return [], Reply(code=554, enhanced_code="5.6.3", internal=True, text=(
                f"{mx} does not offer 8BITMIME, and the message has 8-bit content: send it "
                "encoded (quoted-printable or base64) to deliver it there"))
        opts.append("BODY=8BITMIME")
    return opts, None
