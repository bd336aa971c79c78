"""Bulk-mail header fields built from outbox fields: RFC 8058 one-click unsubscribe and the
Gmail feedback loop's ``Feedback-ID``. Pure: stdlib only.

* ``List-Unsubscribe: <https://...>, <mailto:...>`` (RFC 2369; the HTTPS URI first, as
  receivers take the first one they support) and, when there is an HTTPS URI,
  ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058 §3.1). Both are covered by
  the DKIM signature (``kmta/policy/signing.py``), as RFC 8058 §4 requires.
* ``Feedback-ID: <campaign>:<customer>:<mail type>:<SenderId>`` (Gmail's format, four
  colon-separated fields, SenderId last and constant per sender): campaign from the
  message's ``campaign``, customer its From domain, mail type its pool (``default``) and
  SenderId the sending domain's ``feedback_sender`` (else the domain's name).
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from kmta.errors import InputError

__all__ = ["LIST_HEADERS", "feedback_id", "unsubscribe_headers"]

LIST_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post", "feedback-id"})
_FB_FIELD = re.compile(r"[^A-Za-z0-9._@+-]")
_ADDR = re.compile(r"^[^@\s<>,]+@[^@\s<>,]+\.[^@\s<>,]+$")


def unsubscribe_headers(url: str | None, mailto: str | None) -> list[tuple[str, str]]:
    """The RFC 8058 fields for an unsubscribe URL (https) and/or address; [] when neither."""
    uris: list[str] = []
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.netloc:
            raise InputError("unsubscribe_url must be an https:// URL (RFC 8058 §3.1)")
        if any(c in url for c in "<>, \t\r\n\x00"):
            raise InputError("unsubscribe_url contains a character that needs %-encoding")
        uris.append(f"<{url}>")
    if mailto is not None:
        addr = mailto[7:] if mailto.lower().startswith("mailto:") else mailto
        if not _ADDR.match(addr.split("?", 1)[0]) or any(c in addr for c in "\r\n\x00"):
            raise InputError(f"unsubscribe_mailto {mailto!r} is not an address")
        uris.append(f"<mailto:{addr}>")
    if not uris:
        return []
    out = [("List-Unsubscribe", ", ".join(uris))]
    if url is not None:
        out.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    return out


def feedback_id(campaign: str | None, customer: str, mail_type: str | None,
                sender_id: str) -> str | None:
    """The ``Feedback-ID`` value, or None without a campaign. Colons and other characters
    outside ``[A-Za-z0-9._@+-]`` become ``-``, so every field stays one field."""
    if not campaign:
        return None
    fields = (campaign, customer, mail_type or "default", sender_id)
    return ":".join(_FB_FIELD.sub("-", f)[:64] for f in fields)
