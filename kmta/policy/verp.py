"""VERP envelope senders: ``b+TOKEN@<return_path>`` maps back to the message id, no table.

Format (version 1), all of it inside the token, lower-case RFC 4648 base32 without padding::

    TOKEN = base32( kind (1 byte) || payload || HMAC-SHA256(secret, kind || payload)[:5] )

* kind ``1``: an id made by kmta (``<ms timestamp hex>-<16 hex>``, ``streams/router.py::new_id``)
  packed as 6 bytes of timestamp and 8 bytes of random part: 32 characters;
* kind ``0``: any other id, its UTF-8 bytes.

A local part may have 64 octets (RFC 5321 §4.5.3.1.1), so ``b+`` leaves 62 characters for the
token: kind-0 ids up to 32 bytes fit. A longer id gets the plain ``b@<return_path>`` (no
token); its bounces are still tied by the ``X-Kmta-Id`` header of the returned message.
The 40-bit MAC lets the bounce processor drop forged or mangled addresses (backscatter,
guesses) without any lookup; the token is matched case-insensitively, since some receivers
change the case of a local part. Pure: stdlib only.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

__all__ = ["MAX_LOCAL", "PREFIX", "decode", "encode", "envelope_sender", "message_id_of"]

PREFIX = "b"
MAX_LOCAL = 64
_MAC = 5
_KMTA_ID = re.compile(r"^([1-9a-f][0-9a-f]{0,11})-([0-9a-f]{16})$")  # no leading 0: round trip


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()[:_MAC]


def encode(msg_id: str, secret: bytes) -> str:
    """The token for ``msg_id`` (may be longer than fits a local part: see ``envelope_sender``)."""
    m = _KMTA_ID.match(msg_id)
    if m:
        body = b"\x01" + int(m.group(1), 16).to_bytes(6, "big") + bytes.fromhex(m.group(2))
    else:
        body = b"\x00" + msg_id.encode("utf-8")
    return base64.b32encode(body + _mac(secret, body)).decode().rstrip("=").lower()


def decode(token: str, secret: bytes) -> str | None:
    """The message id of a token, or None when it is not one of ours (bad MAC, garbled)."""
    t = token.strip().upper()
    try:
        raw = base64.b32decode(t + "=" * (-len(t) % 8))
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 1 + _MAC + 1:
        return None
    body, mac = raw[:-_MAC], raw[-_MAC:]
    if not hmac.compare_digest(mac, _mac(secret, body)):
        return None
    if body[0] == 1 and len(body) == 15:
        return f"{int.from_bytes(body[1:7], 'big'):x}-{body[7:].hex()}"
    if body[0] == 0:
        try:
            return body[1:].decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def envelope_sender(msg_id: str, return_path: str, secret: bytes) -> str:
    """``b+TOKEN@return_path``, or ``b@return_path`` when the token would not fit."""
    local = f"{PREFIX}+{encode(msg_id, secret)}"
    if len(local) > MAX_LOCAL:
        local = PREFIX
    return f"{local}@{return_path}"


def message_id_of(address: str, secret: bytes) -> str | None:
    """The message id of a bounce address ``b+TOKEN@...`` (None when not a valid one)."""
    local = address.rpartition("@")[0]
    head, sep, token = local.partition("+")
    if not sep or head.lower() != PREFIX:
        return None
    return decode(token, secret)

