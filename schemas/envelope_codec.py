"""The record of a routed message on the internal queue and delay topics: the body travels once,
as bytes.

Wire form of a record's value (``encode``)::

    b"\\x00KE1" | length of the head, 4 bytes big-endian | head | flags | body
     magic          N                                      N bytes together  to the end

* the **head** is the envelope without its body (``Envelope`` less ``data``) as compact JSON,
  a few hundred bytes: readable in ``kcat`` output, and cheap to decode;
* the **flags** are JSON white space after the head's closing brace, inside its N bytes: a
  space says the body has CRLF line ends only (``Envelope.crlf``; the sender then skips its
  line-end check, three passes over the body). None: nothing is known about the body;
* the **body** is the message exactly as it is sent over SMTP (``Envelope.data``, composed,
  signed and encoded once by the router), neither escaped nor re-encoded.

Why the flags are white space, not a byte of their own or a new magic: every reader before
them parses the N bytes with ``json.loads``, which skips white space after the value, so a
reader of before takes a flagged record as it took any (and checks the body as it did), and
a reader of now takes a record of before as unflagged. Routers, delay schedulers and senders
of either version can share the topics in any order during a rolling upgrade. A flag only
ever allows a reader to skip work it can do itself, so a reader ignores the flags it does not
know (tab, LF and CR are free for more of them); a change that a reader of before must not
ignore takes a new magic, and readers must be upgraded before any writer writes it.

Why so:

* Before, the value was the whole envelope as JSON: every CRLF of the body became ``\\r\\n`` (4
  bytes), every quote ``\\"``, and each hop (router, delay scheduler, senders) escaped and
  unescaped the whole body again: about 0.6 ms to encode and 0.05 ms to decode a 100 KB
  body, and 2-4 % more bytes for the broker per hop (up to twice the size for
  quoted-printable HTML). Now a hop costs a copy of the body and ~15 us of JSON for the head
  (docs/benchmark.md).
* The head goes in the value, not in Kafka record headers: both cost the same to write and
  read here (measured: ~10 us a record either way, next to aiokafka's own 60 us of batch
  building for 100 KB), but a value that holds everything keeps every seam as it is: the
  dead-letter path, the delay scheduler's read-ahead accounting and the sender's
  transactional producer pass one ``bytes`` value, as they did.
* The magic starts with NUL, which no JSON text does, so a record written before this format
  (a JSON object, ``{...}``) is told apart at its first byte and still read (``decode``):
  a queue or delay topic may hold such records across an upgrade.

The public topics (outbox, results, control, dlq) stay plain JSON. A dead letter of an internal
record carries it as ``readable`` makes it: the old JSON form (``Envelope.to_json``, the body as
text) where the body is UTF-8, so it stays readable and can be written back to the queue as it
is; otherwise the record's own bytes in base64 (``original_encoding`` "base64"), to be read
with ``decode``. The JSON form carries no flags (``Envelope.crlf`` is never written as JSON):
a message written back from a dead letter has its body checked again by the sender.
"""
from __future__ import annotations

import base64
import json
import struct

from schemas.message import Envelope

__all__ = ["CRLF_FLAG", "MAGIC", "decode", "encode", "is_binary", "readable"]

MAGIC = b"\x00KE1"
_LEN = struct.Struct(">I")
_START = len(MAGIC) + _LEN.size
CRLF_FLAG = b" "  # the body has CRLF line ends only (Envelope.crlf)
_WHITE = b" \t\r\n"  # JSON white space: what may follow the head, the flags


def encode(env: Envelope) -> bytes:
    """The record value of ``env`` on the queue and delay topics."""
    head = env.model_dump_json(by_alias=True, exclude_none=True, exclude={"data"}).encode()
    if env.crlf:
        head += CRLF_FLAG
    return b"".join((MAGIC, _LEN.pack(len(head)), head, env.data))


def is_binary(value: bytes) -> bool:
    """True for a value in this module's wire form (False: the old JSON form, or neither)."""
    return value[:len(MAGIC)] == MAGIC


def decode(value: bytes) -> Envelope:
    """The envelope of a queue or delay record, in this wire form or the old JSON one.
    Raises ValueError (pydantic's ValidationError is one) when it is neither."""
    if not is_binary(value):
        return Envelope.model_validate_json(value)  # written before the binary form
    if len(value) < _START:
        raise ValueError("queue record cut short: no head length")
    (n,) = _LEN.unpack_from(value, len(MAGIC))
    if _START + n > len(value):
        raise ValueError(f"queue record cut short: head of {n} bytes, "
                         f"{len(value) - _START} after the magic")
    head = value[_START:_START + n]
    try:
        doc = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"queue record head is not JSON: {e}") from None
    if not isinstance(doc, dict) or "data" in doc or "crlf" in doc:
        raise ValueError("queue record head is not an envelope without its body")
    doc["data"] = value[_START + n:]
    flags = head[len(head.rstrip(_WHITE)):]
    if CRLF_FLAG in flags:
        doc["crlf"] = True
    return Envelope.model_validate(doc)


def readable(value: bytes) -> tuple[str, str]:
    """``(original, original_encoding)`` of a dead letter for a queue or delay record: the
    envelope as JSON with its body as text where it can (see the module doc), else the bytes
    as they are (UTF-8 text, or base64)."""
    if is_binary(value):
        try:
            env = decode(value)
            return env.to_json().decode(), "utf-8"
        except ValueError:  # a head it cannot read, or a body that is not UTF-8
            pass
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode(), "base64"
