"""Compose an RFC 5322 message from subject + text/html, or check a given one. Stdlib only."""
from __future__ import annotations

import email.policy
import email.utils
from email.message import EmailMessage

from kmta.errors import InputError
from schemas.message import OutboxMessage

__all__ = ["compose", "RESERVED_HEADERS", "TRACE_HEADER"]

TRACE_HEADER = "X-Kmta-Id"
RESERVED_HEADERS = frozenset({"x-kmta-id", "from", "to", "subject", "message-id", "date", "mime-version",
                              "content-type", "content-transfer-encoding"})
_POLICY = email.policy.SMTP.clone(max_line_length=998)


def compose(msg: OutboxMessage, msg_id: str, id_domain: str, now: float) -> str:
    """Return the full message text with CRLF line ends.

    ``data`` messages are passed through with CRLF normalised; a ``Message-ID`` and ``Date`` are
    added to composed messages. Header values with CR or LF are refused (injection). Every
    message gets an ``X-Kmta-Id`` trace header first, so a recipient (or a test sink) can tell
    which kmta message it received.
    """
    trace = f"{TRACE_HEADER}: {msg_id}\r\n"
    if msg.data is not None:
        text = msg.data.replace("\r\n", "\n").replace("\r", "\n")
        head, sep, _ = text.partition("\n\n")
        if not sep or ":" not in head.split("\n", 1)[0]:
            raise InputError("data is not an RFC 5322 message: no header section")
        return trace + text.replace("\n", "\r\n")
    m = EmailMessage(policy=_POLICY)
    for name, value in {"From": msg.from_, "To": msg.to, "Subject": msg.subject or ""}.items():
        _check_header(name, value)
        m[name] = value
    m["Date"] = email.utils.formatdate(now, usegmt=True)
    m["Message-ID"] = f"<{msg_id}@{id_domain}>"
    for name, value in (msg.headers or {}).items():
        if name.lower() in RESERVED_HEADERS:
            raise InputError(f"header {name!r} is set by kmta; use the message field instead")
        if not name or any(c in name for c in ":\r\n \t") or not name.isascii():
            raise InputError(f"invalid header name {name!r}")
        _check_header(name, value)
        m[name] = value
    if msg.text is not None:
        m.set_content(msg.text)
        if msg.html is not None:
            m.add_alternative(msg.html, subtype="html")
    else:
        m.set_content(msg.html or "", subtype="html")
    return trace + m.as_string()


def _check_header(name: str, value: str) -> None:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise InputError(f"header {name} contains a line break (header injection refused)")
