"""Compose an RFC 5322 message from subject + text/html, or check a given one. Stdlib only."""
from __future__ import annotations

import email.charset
import email.policy
import email.utils
from collections.abc import Sequence
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from kmta.errors import InputError
from schemas.message import OutboxMessage

__all__ = ["compose", "RESERVED_HEADERS", "TRACE_HEADER"]

TRACE_HEADER = "X-Kmta-Id"
RESERVED_HEADERS = frozenset({"x-kmta-id", "from", "to", "subject", "message-id", "date", "mime-version",
                              "content-type", "content-transfer-encoding"})
_POLICY = email.policy.compat32.clone(linesep="\r\n", max_line_length=78)
_QP_UTF8 = email.charset.Charset("utf-8")
_QP_UTF8.body_encoding = email.charset.QP


def compose(msg: OutboxMessage, msg_id: str, id_domain: str, now: float,
            extra: Sequence[tuple[str, str]] = ()) -> str:
    """Return the full message text with CRLF line ends.

    ``data`` messages are passed through with CRLF normalised; a ``Message-ID`` and ``Date`` are
    added to composed messages. Header values with CR or LF are refused (injection). Every
    message gets an ``X-Kmta-Id`` trace header first, so a recipient (or a test sink) can tell
    which kmta message it received. ``extra`` fields (List-Unsubscribe, Feedback-ID, built by
    the router) go after the given headers, or after the trace header of a ``data`` message.
    """
    for name, value in extra:
        _check_header(name, value)
    trace = f"{TRACE_HEADER}: {msg_id}\r\n"
    if msg.data is not None:
        text = msg.data.replace("\r\n", "\n").replace("\r", "\n")
        head, sep, _ = text.partition("\n\n")
        if not sep or ":" not in head.split("\n", 1)[0]:
            raise InputError("data is not an RFC 5322 message: no header section")
        trace += "".join(f"{name}: {value}\r\n" for name, value in extra)
        return trace + text.replace("\n", "\r\n")
    headers: list[tuple[str, str]] = [("From", msg.from_), ("To", msg.to),
                                      ("Subject", msg.subject or "")]
    for name, value in (msg.headers or {}).items():
        if name.lower() in RESERVED_HEADERS:
            raise InputError(f"header {name!r} is set by kmta; use the message field instead")
        if not name or any(c in name for c in ":\r\n \t") or not name.isascii():
            raise InputError(f"invalid header name {name!r}")
        headers.append((name, value))
    for name, value in headers:
        _check_header(name, value)
    # compat32 MIME classes: the same RFC 5322/2045 output as EmailMessage for these simple
    # shapes at a fraction of the cost (header folding in the modern policy dominated routing)
    if msg.text is not None and msg.html is not None:
        body: Message = MIMEMultipart("alternative")
        for part in (_part(msg.text, "plain"), _part(msg.html, "html")):
            del part["MIME-Version"]
            body.attach(part)
    else:
        body = _part(msg.text if msg.text is not None else (msg.html or ""),
                     "plain" if msg.text is not None else "html")
    del body["MIME-Version"]
    for name, value in headers[:3]:
        body[name] = _header(value)
    body["Date"] = email.utils.formatdate(now, usegmt=True)
    body["Message-ID"] = f"<{msg_id}@{id_domain}>"
    for name, value in [*headers[3:], *extra]:
        body[name] = _header(value)
    body["MIME-Version"] = "1.0"
    text = body.as_string(policy=_POLICY)
    return trace + text


def _part(text: str, subtype: str) -> MIMEText:
    charset = "us-ascii" if text.isascii() and max(map(len, text.splitlines() or [""])) <= 998 \
        else "utf-8"
    # quoted-printable keeps mostly-ASCII UTF-8 text readable
    return MIMEText(text, subtype, _QP_UTF8 if charset == "utf-8" else charset)


def _header(value: str) -> str | Header:
    if value.isascii() and len(value) < 900:
        return value
    return Header(value, "utf-8", header_name=None)


def _check_header(name: str, value: str) -> None:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise InputError(f"header {name} contains a line break (header injection refused)")
