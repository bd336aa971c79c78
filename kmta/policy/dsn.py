"""Delivery status notifications (RFC 3464, RFC 6522 multipart/report, RFC 6533 global DSNs)
read with the stdlib ``email`` package: one ``RecipientStatus`` per recipient block, and the
returned message's header fields (``text/rfc822-headers`` or ``message/rfc822``), which tie it
to the message sent when the envelope carries no VERP token.

Providers that send no RFC 3464 report (qmail's "failure notice", still used by Yahoo, some
appliances) write the recipient and the SMTP reply in plain text: ``parse_plain`` reads the
common layouts (``<addr>:`` then the remote reply, as qmail-send writes it; Exim's
``addr`` + ``host ... said: 550 ...``). Pure: stdlib only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser

from kmta.policy.reply import Reply

__all__ = ["Dsn", "RecipientStatus", "is_dsn", "original_headers", "parse", "parse_plain"]

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDR = re.compile(r"<?([^\s<>@:;,\"]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+)>?")
_DS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_HEADER_TYPES = ("text/rfc822-headers", "message/global-headers")
_MESSAGE_TYPES = ("message/rfc822", "message/global")


@dataclass(frozen=True)
class RecipientStatus:
    """One per-recipient block of a DSN (RFC 3464 §2.3)."""

    recipient: str  # Final-Recipient address, lower-cased ("rfc822;" dropped)
    action: str  # failed | delayed | delivered | relayed | expanded (lower-case)
    status: str | None  # RFC 3463 code, e.g. "5.1.1"
    diagnostic: str | None = None  # Diagnostic-Code text without its type ("smtp;")
    diagnostic_type: str | None = None
    remote_mta: str | None = None
    original_recipient: str | None = None

    def reply(self) -> Reply:
        """The remote reply as the classifier sees a synchronous one: the basic code from the
        diagnostic when it has one, the status field as the enhanced code (authoritative, RFC
        3464 §2.3.4)."""
        text = self.diagnostic or ""
        r = Reply.parse(None, text) if text else Reply(None, None, "")
        enhanced = self.status or r.enhanced_code
        return Reply(r.code, enhanced, r.text)

    @property
    def permanent(self) -> bool:
        return self.action == "failed" and (self.status or "5").startswith("5")


@dataclass(frozen=True)
class Dsn:
    reporting_mta: str | None
    recipients: tuple[RecipientStatus, ...]
    original: dict[str, str] = field(default_factory=dict)  # lower-cased names -> values
    envelope_id: str | None = None
    rfc3464: bool = True  # False: read from a plain-text bounce (``parse_plain``)

    def failures(self) -> list[RecipientStatus]:
        return [r for r in self.recipients if r.action == "failed"]


def is_dsn(msg: Message) -> bool:
    """``multipart/report; report-type=delivery-status`` (RFC 3464 §2)."""
    return (msg.get_content_type() == "multipart/report"
            and str(msg.get_param("report-type", "")).lower() in ("delivery-status",
                                                                   "global-delivery-status"))


def _u(s: str) -> str:
    """Raw 8-bit bytes (RFC 6533 UTF-8 fields) as text: the parser keeps them as surrogates."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _field_value(v: str | None) -> str | None:
    if v is None:
        return None
    return " ".join(_u(str(v)).split()) or None


def _typed(v: str | None) -> tuple[str | None, str | None]:
    """``"rfc822; a@b"`` -> ``("rfc822", "a@b")``; a value without a type keeps None."""
    v = _field_value(v)
    if v is None:
        return None, None
    kind, sep, rest = v.partition(";")
    if not sep:
        return None, v
    return kind.strip().lower(), rest.strip() or None


def _address(v: str | None) -> str | None:
    _, value = _typed(v)
    if value is None:
        return None
    m = _ADDR.search(value)
    return m.group(1).lower() if m else value.strip("<>").lower()


def _blocks(part: Message) -> list[Message]:
    """The field groups of a delivery-status part. The email package parses
    ``message/delivery-status`` into a list of header blocks, and ``message/global-delivery-
    status`` like a message (first block as its header, the rest as its body); a part it kept
    as text is split here."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        raw = part.get_payload(decode=True) or b""
        return _split_blocks(raw.decode("utf-8", "replace"))
    out: list[Message] = []
    for p in payload:
        if not isinstance(p, Message):
            continue
        if p.keys():
            out.append(p)
        if isinstance(p.get_payload(), str):
            rest = p.get_payload(decode=True) or b""
            if rest.strip():
                out += _split_blocks(rest.decode("utf-8", "replace"))
    return out


def _split_blocks(text: str) -> list[Message]:
    parser = HeaderParser()
    text = _u(text).replace("\r\n", "\n")
    return [parser.parsestr(b.strip() + "\n") for b in re.split(r"\n\s*\n", text) if b.strip()]


def original_headers(msg: Message) -> dict[str, str]:
    """Header fields of the returned message inside a report (first occurrence, names
    lower-cased), from a ``text/rfc822-headers`` or ``message/rfc822`` part; {} when none."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in _MESSAGE_TYPES:
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if isinstance(inner, Message):
                return _header_dict(inner)
            raw = part.get_payload(decode=True) or b""
            return _header_dict(HeaderParser().parsestr(raw.decode("utf-8", "replace")))
        if ctype in _HEADER_TYPES:
            raw = part.get_payload(decode=True) or b""
            return _header_dict(HeaderParser().parsestr(raw.decode("utf-8", "replace")))
    return {}


def _header_dict(m: Message) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in m.items():
        out.setdefault(k.lower(), " ".join(_u(str(v)).split()))
    return out


def parse(msg: Message) -> Dsn | None:
    """The DSN in ``msg``, or None when it is not a delivery-status report or has no
    recipient block."""
    if not is_dsn(msg):
        return None
    part = next((p for p in msg.walk() if p.get_content_type() in _DS_TYPES), None)
    if part is None:
        return None
    blocks = _blocks(part)
    if not blocks:
        return None
    per_msg = blocks[0] if "final-recipient" not in {k.lower() for k in blocks[0]} else None
    recips = []
    for b in blocks[1:] if per_msg is not None else blocks:
        rcpt = _address(b.get("Final-Recipient")) or _address(b.get("Original-Recipient"))
        action = (_field_value(b.get("Action")) or "").lower().split(" ")[0]
        if not rcpt or not action:
            continue
        status_m = _STATUS.search(_field_value(b.get("Status")) or "")
        dtype, diag = _typed(b.get("Diagnostic-Code"))
        recips.append(RecipientStatus(
            recipient=rcpt, action=action, status=status_m.group(0) if status_m else None,
            diagnostic=diag, diagnostic_type=dtype, remote_mta=_typed(b.get("Remote-MTA"))[1],
            original_recipient=_address(b.get("Original-Recipient"))))
    if not recips:
        return None
    reporting = _typed(per_msg.get("Reporting-MTA"))[1] if per_msg is not None else None
    envid = _field_value(per_msg.get("Original-Envelope-Id")) if per_msg is not None else None
    return Dsn(reporting, tuple(recips), original_headers(msg), envid)


# A plain-text bounce: qmail ("Hi. This is the qmail-send program ... <a@b>:"), Yahoo's
# variant of it, Exim ("This message was created automatically by mail delivery software").
_PLAIN_MARKERS = re.compile(
    r"(qmail-send program|could not be delivered to one or more|permanent error|"
    r"unable to deliver your message|delivery to the following recipient|"
    r"message was created automatically by mail delivery software|"
    r"failed permanently|undeliverable|returned mail|delivery has failed|failure notice)",
    re.IGNORECASE)
_SMTP_LINE = re.compile(r"\b([45]\d\d)[ :-]((?:[45]\.\d{1,3}\.\d{1,3}\b)?[^\n]*)")
_RECIPIENT_LINE = re.compile(r"^\s*<?([^\s<>@:;,\"]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+)>?:?\s*$",
                             re.MULTILINE)


def parse_plain(msg: Message, text: str) -> Dsn | None:
    """A bounce without an RFC 3464 part: the first recipient line and the first SMTP reply
    after it (``text`` is the message's readable text). None unless it reads like a bounce
    and both are found."""
    subject = str(msg.get("Subject", ""))
    if not (_PLAIN_MARKERS.search(subject) or _PLAIN_MARKERS.search(text[:3000])):
        return None
    body = text.split("\n--- Below this line is a copy of the message", 1)[0]
    body = re.split(r"\n-+\s*(?:Original message|This is a copy of the message)", body,
                    maxsplit=1, flags=re.IGNORECASE)[0]
    rm = _RECIPIENT_LINE.search(body)
    if rm is None:
        return None
    sm = _SMTP_LINE.search(body, rm.end())
    if sm is None:
        return None
    diag = " ".join(f"{sm.group(1)} {sm.group(2)}".split())
    reply = Reply.parse(None, diag)
    action = "failed" if sm.group(1).startswith("5") else "delayed"
    rs = RecipientStatus(recipient=rm.group(1).lower(), action=action, status=reply.enhanced_code,
                         diagnostic=diag, diagnostic_type="smtp")
    return Dsn(None, (rs,), original_headers(msg), rfc3464=False)
