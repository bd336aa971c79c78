"""Abuse Reporting Format (RFC 5965) feedback reports, as feedback loops send them (Yahoo CFL,
Microsoft JMRP, Mail.ru, Yandex, Fastmail...): ``multipart/report;
report-type=feedback-report`` with a human part, a ``message/feedback-report`` part of fields
and the reported message (``message/rfc822`` or ``text/rfc822-headers``). Pure: stdlib only.

Providers redact differently: Microsoft JMRP keeps the original message but blanks the
recipient in ``To`` (keeping it in ``X-HmXmrOriginalRecipient``); Yahoo keeps
``Original-Rcpt-To`` out and the message in; some send only
the headers. The recipient is therefore read from ``Original-Rcpt-To``, else the returned
message's ``To`` (when it is an address, not ``[redacted]``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from kmta.policy.dsn import original_headers

__all__ = ["FeedbackReport", "is_arf", "parse"]

_ADDR = re.compile(r"^[^\s<>@]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+$")
# RFC 5965 §7.3 registry plus RFC 6650's "not-spam"
FEEDBACK_TYPES = frozenset({"abuse", "fraud", "virus", "other", "not-spam", "auth-failure"})


@dataclass(frozen=True)
class FeedbackReport:
    feedback_type: str  # lower-case; unknown values are kept ("other" when missing)
    user_agent: str | None
    # Reporting-MTA or User-Agent: who reported it (e.g. "Yahoo!-Mail-Feedback/2.0")
    source: str | None
    source_ip: str | None
    original_mail_from: str | None  # the envelope sender: our VERP address
    original_rcpt_to: str | None
    arrival_date: str | None
    reported_domain: str | None
    original: dict[str, str] = field(default_factory=dict)

    def recipient(self) -> str | None:
        """The complaining address: Original-Rcpt-To, else the reported message's To."""
        if self.original_rcpt_to and _ADDR.match(self.original_rcpt_to):
            return self.original_rcpt_to
        jmrp = self.original.get("x-hmxmroriginalrecipient", "").strip("<> ")
        if _ADDR.match(jmrp):  # Microsoft JMRP redacts To but keeps this field
            return jmrp.lower()
        addrs = [a for _, a in getaddresses([self.original.get("to", "")]) if _ADDR.match(a)]
        return addrs[0].lower() if len(addrs) == 1 else None

    @property
    def complaint(self) -> bool:
        """A spam/abuse complaint (counts against reputation); ``not-spam`` and
        ``auth-failure`` reports are not."""
        return self.feedback_type in ("abuse", "fraud", "virus", "other")


def is_arf(msg: Message) -> bool:
    return (msg.get_content_type() == "multipart/report"
            and str(msg.get_param("report-type", "")).lower() == "feedback-report")


def _fields(part: Message) -> Message:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    raw = part.get_payload(decode=True) or b""
    return HeaderParser().parsestr(raw.decode("utf-8", "replace").replace("\r\n", "\n"))


def _one(m: Message, name: str) -> str | None:
    v = m.get(name)
    if v is None:
        return None
    return " ".join(str(v).split()).strip("<>") or None


def _typed_value(v: str | None) -> str | None:
    """``"dns; mail.example"`` -> ``"mail.example"``."""
    return v.partition(";")[2].strip() or None if v and ";" in v else v


def parse(msg: Message) -> FeedbackReport | None:
    """The report in ``msg``; None when it is not an ARF report or lacks its fields part."""
    if not is_arf(msg):
        return None
    part = next((p for p in msg.walk() if p.get_content_type() == "message/feedback-report"),
                None)
    if part is None:
        return None
    f = _fields(part)
    ftype = (_one(f, "Feedback-Type") or "other").lower()
    ua = _one(f, "User-Agent")
    rcpt = _one(f, "Original-Rcpt-To")
    mfrom = _one(f, "Original-Mail-From")
    return FeedbackReport(
        feedback_type=ftype, user_agent=ua,
        source=_typed_value(_one(f, "Reporting-MTA")) or ua or _one(f, "Source"),
        source_ip=_one(f, "Source-IP"),
        original_mail_from=mfrom.lower() if mfrom else None,
        original_rcpt_to=rcpt.lower() if rcpt else None,
        arrival_date=_one(f, "Arrival-Date") or _one(f, "Received-Date"),
        reported_domain=_one(f, "Reported-Domain"),
        original=original_headers(msg))
