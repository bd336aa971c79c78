"""Signed unsubscribe tokens (RFC 8058 one-click URLs and RFC 2369 mailto subjects).

``TOKEN = base64url(id 0x1f address 0x1f list [0x1f domain]) "." base64url(HMAC-SHA256(secret,
"u1" || payload)[:16])`` without padding: the server needs no table to know whom to unsubscribe
from what, and nobody can unsubscribe an address they did not receive a message for (RFC 8058
§3.2 asks that the URI identify the recipient and list and be hard to forge). ``list`` is the
message's campaign ("" for none), ``domain`` its sending domain (the ``[[domains]]`` entry of
its From domain; tokens made before it was added have three fields and no domain). URL- and
subject-safe characters only. Pure: stdlib only.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

__all__ = ["SUBJECT_PREFIX", "Unsubscribe", "links", "make_token", "read_token"]

_VERSION = b"u1"
_SEP = "\x1f"
_MAC = 16
SUBJECT_PREFIX = "unsubscribe "


@dataclass(frozen=True)
class Unsubscribe:
    id: str
    address: str
    list: str | None
    domain: str | None = None  # the sending domain


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _VERSION + payload, hashlib.sha256).digest()[:_MAC]


def make_token(secret: bytes, msg_id: str, address: str, list_name: str | None,
               domain: str | None = None) -> str:
    """The token of one recipient of one message; the address and domain are lower-cased."""
    fields = [msg_id, address.lower(), list_name or ""] + ([domain.lower()] if domain else [])
    if any(_SEP in f for f in fields):
        raise ValueError("unsubscribe token fields may not contain 0x1f")
    payload = _SEP.join(fields).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def read_token(secret: bytes, token: str) -> Unsubscribe | None:
    """What a token says, or None when it is forged, truncated or garbled."""
    body, sep, mac = token.strip().partition(".")
    if not sep or not body or not mac:
        return None
    try:
        payload, given = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError):
        return None
    if _b64(given) != mac or not hmac.compare_digest(given, _mac(secret, payload)):
        # the first test refuses a non-canonical spelling of the same bytes
        return None
    try:
        parts = payload.decode("utf-8").split(_SEP)
    except UnicodeDecodeError:
        return None
    if len(parts) not in (3, 4) or not parts[0] or "@" not in parts[1]:
        return None
    return Unsubscribe(parts[0], parts[1], parts[2] or None,
                       parts[3] or None if len(parts) == 4 else None)


def links(secret: bytes, base_url: str, msg_id: str, address: str, list_name: str | None,
          mailbox: str | None, domain: str | None = None) -> tuple[str, str | None]:
    """The one-click URL ``<base_url>/u/<token>`` and, with ``mailbox`` (``unsubscribe@<return
    path>``), the mailto URI whose subject carries the same token."""
    token = make_token(secret, msg_id, address, list_name, domain)
    url = f"{base_url.rstrip('/')}/u/{token}"
    mailto = f"mailto:{mailbox}?subject=unsubscribe%20{token}" if mailbox else None
    return url, mailto
