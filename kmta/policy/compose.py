"""Compose an RFC 5322 message from subject + text/html, or check a given one. Stdlib only."""
from __future__ import annotations

import email.charset
import email.generator
import email.policy
import email.utils
import io
import random
import re
import sys
from collections.abc import Sequence
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.mime.text import MIMEText
from typing import NamedTuple

from kmta.errors import InputError
from kmta.policy.addresses import split_address
from schemas.message import OutboxMessage
from schemas.text import has_surrogate

__all__ = ["RESERVED_HEADERS", "TRACE_HEADER", "compose", "compose_bytes"]

TRACE_HEADER = "X-Kmta-Id"
RESERVED_HEADERS = frozenset({"x-kmta-id", "from", "to", "subject", "message-id", "date",
                              "mime-version", "content-type", "content-transfer-encoding"})
_POLICY = email.policy.compat32.clone(linesep="\r\n", max_line_length=78)
_QP_UTF8 = email.charset.Charset("utf-8")
_QP_UTF8.body_encoding = email.charset.QP
_B64_UTF8 = email.charset.Charset("utf-8")
_B64_UTF8.body_encoding = email.charset.BASE64
MAX_LINE = 998  # octets per line without CRLF (RFC 5322 2.1.1, RFC 5321 4.5.3.1.6)
# RFC 5322 3.6.8 field names (ftext), given by the input: short enough to fold after them
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,76}")
_DATA_FIELD = re.compile(r"[\x21-\x39\x3b-\x7e]+")
# What no header value may hold: C0 controls except HTAB, DEL, C1 controls, U+2028/U+2029. Each of
# \x0b \x0c \x1c-\x1e \x85 \u2028 \u2029 ends a line for str.splitlines() and so for parts of the
# email package and for some readers: left in, they make header lines the input never named.
_BAD_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_WORDS = re.compile(r"(?=[ \t]+[^ \t])")  # before white space that a word follows
_PLAIN_VALUE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")  # written as it is (_Generator)
# the policy ``_Generator`` writes with (``maxheaderlen=0``: values come folded from ``_header``)
_FLAT = _POLICY.clone(max_line_length=0)
# ``_direct`` writes a multipart's Content-Type on one line, as the generator does for every
# boundary ``_boundary`` draws (of one fixed length); if a Python's email package ever folds it
# otherwise, composing goes through the email package only
_DIRECT = _FLAT.fold(
    "Content-Type", 'multipart/alternative; boundary="' + "=" * 15 + "0" * 19 + '=="') == (
    'Content-Type: multipart/alternative; boundary="' + "=" * 15 + "0" * 19 + '=="\r\n')


def compose(msg: OutboxMessage, msg_id: str, id_domain: str, now: float,
            extra: Sequence[tuple[str, str]] = ()) -> str:
    """Return the full message text with CRLF line ends (``compose_bytes``, decoded)."""
    return compose_bytes(msg, msg_id, id_domain, now, extra).decode("utf-8")


def compose_bytes(msg: OutboxMessage, msg_id: str, id_domain: str, now: float,
                  extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """Return the full message as it is sent: UTF-8, CRLF line ends. Each text is encoded
    once (which is also its check for lone surrogates) and its lines are checked and its line
    ends converted as bytes: the router's 100 KB message took three more passes over its text
    as ``str`` (two surrogate checks and the encode of the whole message; docs/benchmark.md).

    ``data`` messages are passed through with CRLF normalised; they are refused with NUL, a
    lone surrogate or a line over 998 octets (8-bit data is left to the sender: BODY=8BITMIME).
    A ``Message-ID`` and ``Date`` are added to composed messages, whose header lines are all
    named by the input (names are RFC 5322 ftext; values with a control character that some
    reader takes for a line end are refused) and folded to at most 998 octets. Every message gets
    an ``X-Kmta-Id`` trace header first, so a recipient (or a test sink) can tell which kmta
    message it received. ``extra`` fields (List-Unsubscribe, Feedback-ID, built by the router)
    go after the given headers, or after the trace header of a ``data`` message.
    """
    for name, value in extra:
        _check_header(name, value)
    trace = f"{TRACE_HEADER}: {msg_id}\r\n"
    if msg.data is not None:
        text = _check_data(msg.data)
        return (trace + "".join(f"{name}: {_header(name, value)}\r\n"
                                for name, value in extra) + text).encode("utf-8")
    for name in msg.headers or {}:
        if name.lower() in RESERVED_HEADERS:
            raise InputError(f"header {name!r} is set by kmta; use the message field instead")
        if not _FIELD_NAME.fullmatch(name):
            raise InputError(f"invalid header name {name!r}: 1-76 printable ASCII characters "
                             "without ':' or space (RFC 5322 3.6.8)")
    headers: list[tuple[str, str]] = [("Subject", msg.subject or ""), *(msg.headers or {}).items()]
    for name, value in headers:
        _check_header(name, value)
    try:  # UTF-8's strict encoder refuses exactly the lone surrogates
        plain = None if msg.text is None else _Text(msg.text, msg.text.encode("utf-8"))
        rich = None if msg.html is None else _Text(msg.html, msg.html.encode("utf-8"))
    except UnicodeEncodeError:
        raise InputError("text or html contains a lone surrogate (not valid Unicode)") from None
    # the addresses are bare addr-specs; a non-ASCII local part stays UTF-8 (RFC 6532: the
    # sender then needs SMTPUTF8), an internationalized domain is written as its A-label
    trace += f"From: {_address(msg.from_, 'from')}\r\nTo: {_address(msg.to, 'to')}\r\n"
    if _DIRECT and all(_as_is(t.raw) for t in (plain, rich) if t is not None):
        return _direct(trace, plain, rich, headers, extra, msg_id, id_domain, now)
    # compat32 MIME classes: the same RFC 5322/2045 output as EmailMessage for these simple
    # shapes at a fraction of the cost (header folding in the modern policy dominated routing)
    slots: dict[str, bytes] = {}  # placeholder payload -> the text written in its place
    if plain is not None and rich is not None:
        body: Message = MIMEMultipart("alternative")
        for part in (_part(plain, "plain", slots), _part(rich, "html", slots)):
            del part["MIME-Version"]
            body.attach(part)
        body.set_boundary(_boundary((plain.raw, rich.raw)))
    else:
        body = _part(plain if plain is not None else (rich or _Text("", b"")),
                     "plain" if plain is not None else "html", slots)
    del body["MIME-Version"]
    body["Subject"] = _header(*headers[0])
    body["Date"] = email.utils.formatdate(now, usegmt=True)
    body["Message-ID"] = f"<{msg_id}@{id_domain}>"
    for name, value in [*headers[1:], *extra]:
        body[name] = _header(name, value)
    body["MIME-Version"] = "1.0"
    # values come folded from _header: as_string's folding (maxheaderlen=None) would cost
    # ~0.2 ms a header for the few values that need it
    out = io.StringIO()
    _Generator(out, mangle_from_=False, maxheaderlen=0, policy=_POLICY).flatten(body)
    return _fill(trace + out.getvalue(), slots)


def _direct(trace: str, plain: _Text | None, rich: _Text | None,
            headers: list[tuple[str, str]], extra: Sequence[tuple[str, str]], msg_id: str,
            id_domain: str, now: float) -> bytes:
    """What the email package path below writes when every text is sent as it is (no line over
    998 octets, no NUL: the bulk-mail case), written directly: the same header lines in the
    same order, the same MIME structure, ~5x cheaper (a unit test compares the two paths
    byte for byte)."""
    tail = [f"Subject: {_header(*headers[0]).text}\r\n",
            _line("Date", email.utils.formatdate(now, usegmt=True)),
            _line("Message-ID", f"<{msg_id}@{id_domain}>"),
            *(f"{name}: {_header(name, value).text}\r\n" for name, value in [*headers[1:], *extra]),
            "MIME-Version: 1.0\r\n\r\n"]
    if plain is not None and rich is not None:
        boundary = _boundary((plain.raw, rich.raw))
        head = (f"{trace}Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n"
                + "".join(tail) + f"--{boundary}\r\n" + _part_head(plain, "plain"))
        return b"".join((head.encode("utf-8"), _crlf(plain.raw),
                         f"\r\n--{boundary}\r\n{_part_head(rich, 'html')}".encode("ascii"),
                         _crlf(rich.raw), f"\r\n--{boundary}--\r\n".encode("ascii")))
    given = plain if plain is not None else (rich or _Text("", b""))
    head = (trace + _part_head(given, "plain" if plain is not None else "html")[:-2]
            + "".join(tail))
    return head.encode("utf-8") + _crlf(given.raw)


def _part_head(given: _Text, subtype: str) -> str:
    """A text part's header lines and the blank line after them, as ``_part`` makes them."""
    if given.text.isascii():
        return (f"Content-Type: text/{subtype}; charset=\"us-ascii\"\r\n"
                "Content-Transfer-Encoding: 7bit\r\n\r\n")
    return (f"Content-Type: text/{subtype}; charset=\"utf-8\"\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n")


def _line(name: str, value: str) -> str:
    """One header line as ``_Generator._write_headers`` writes a ``str`` value."""
    if len(name) + 2 + len(value) <= MAX_LINE and _PLAIN_VALUE.fullmatch(value):
        return f"{name}: {value}\r\n"
    return _FLAT.fold(name, value)


def _crlf(raw: bytes) -> bytes:
    """A part's text with every line end (CRLF, CR, LF) as CRLF, as the generator writes it
    (``_write_lines``)."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return raw.replace(b"\n", b"\r\n")


class _Text(NamedTuple):
    """A part's text and its UTF-8 encoding (made once, in ``compose_bytes``)."""

    text: str
    raw: bytes


def _boundary(texts: Sequence[bytes]) -> str:
    """A multipart boundary as the stock generator makes it (random), that no part's text
    holds: the stock one tests it with a MULTILINE regex over the whole text (~2.4 ms for
    100 KB of HTML), a substring test takes tens of microseconds and is stricter."""
    while True:
        boundary = "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="
        mark = b"--" + boundary.encode("ascii")
        if not any(mark in t for t in texts):
            return boundary


def _fill(skeleton: str, slots: dict[str, bytes]) -> bytes:
    """The message as UTF-8 with each placeholder payload replaced by its text, line ends as
    CRLF: what the generator writes for that text (``_write_lines``), in one join instead of
    copies of the text through the email package and its buffers (~1 ms for 100 KB)."""
    pieces: list[bytes] = []
    rest = skeleton.encode("utf-8")  # headers and MIME structure: a few hundred bytes
    for slot, text in slots.items():  # in the order the parts were made, which they appear in
        before, rest = rest.split(slot.encode("ascii"), 1)
        pieces += (before, _crlf(text))
    pieces.append(rest)
    return b"".join(pieces)


class _Generator(email.generator.Generator):
    """``Message.as_string``'s generator, writing a part's text with three ``str.replace``
    instead of a regex split and two writes per line: the same output, and 100 KB of text
    in ~0.1 ms instead of ~1.2 ms (a unit test compares it with the stock generator)."""

    def _write_headers(self, msg: Message) -> None:
        # compat32 folds every str value through ``Header`` (~0.1 ms a header, a third of a
        # 100 KB message's composing): values that cannot need folding, printable ASCII
        # words with single spaces, fitting the line, come out of it unchanged
        policy = self.policy if self.policy is not None else msg.policy
        width = policy.max_line_length or MAX_LINE
        for name, value in msg.raw_items():
            if (isinstance(value, str) and len(name) + 2 + len(value) <= width
                    and _PLAIN_VALUE.fullmatch(value)):
                self.write(f"{name}: {value}{policy.linesep}")
            else:
                self.write(policy.fold(name, value))
        self.write(policy.linesep)  # the blank line after the header (the stock one: self._NL)

    def _write_lines(self, lines: str) -> None:
        if lines:  # CRLF, CR and LF (the stock generator's NLCRE) each become the line end
            nl = self.policy.linesep if self.policy is not None else "\n"
            if "\r" in lines:  # each pass over 100 KB costs ~0.1 ms: only the ones needed
                lines = lines.replace("\r\n", "\n").replace("\r", "\n")
            self.write(lines.replace("\n", nl))


def _part(given: _Text, subtype: str, slots: dict[str, bytes]) -> MIMENonMultipart:
    """The text as a MIME part, encoded only where SMTP needs it: never re-encoded when its
    lines fit (7bit when ASCII, else 8bit UTF-8 sent with BODY=8BITMIME: ``smtpext``). Such a
    part gets a placeholder payload (NUL-delimited: no text here holds NUL, no header value
    either) that ``_fill`` replaces by the text."""
    text, raw = given
    if _as_is(raw):
        slot = f"\x00{len(slots)}\x00"
        slots[slot] = raw
        if text.isascii():
            return MIMEText(slot, subtype, "us-ascii")
        part = MIMENonMultipart("text", subtype, charset="utf-8")
        part["Content-Transfer-Encoding"] = "8bit"
        part.set_payload(slot)  # as text: written as it is
        return part
    # a line over 998 octets must be encoded: quoted-printable keeps mostly-ASCII text
    # readable; text with many non-ASCII characters goes as base64, which grows it by 4/3
    # instead of up to 3x
    extra = len(raw) - len(text)
    return MIMEText(text, subtype, _B64_UTF8 if extra * 6 > len(text) else _QP_UTF8)


def _as_is(raw: bytes) -> bool:
    """The UTF-8 text ``raw`` goes as it is (7bit or 8bit): no NUL, no line over 998 octets."""
    return b"\x00" not in raw and _lines_fit(raw)


def _lines_fit(raw: bytes) -> bool:
    """Every line of the UTF-8 text ``raw`` at most 998 octets."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return max(map(len, raw.split(b"\n"))) <= MAX_LINE


class _Folded:
    """A header value written as it is: compat32 would pass a ``str`` through ``Header`` again
    (~0.1 ms a header), which also strips and re-spaces white space at the folds."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def encode(self, linesep: str = "\n", **_: object) -> str:
        return self.text.replace("\r\n", linesep)

    def __str__(self) -> str:
        return self.text


def _header(name: str, value: str) -> _Folded:
    """The value, folded to lines of at most 78 characters where it can be (RFC 5322 2.2.3)
    and never over 998 octets."""
    # text that reads as an encoded word (RFC 2047 "=?charset?q?...?=") is encoded itself, or
    # readers would show its decoding instead of the text
    if value.isascii() and "=?" not in value:
        if len(name) + 2 + len(value) <= 78:
            return _Folded(value)
        folded = _fold(len(name) + 2, value)
        if folded is not None:
            return _Folded(folded)
    # encoded words (RFC 2047) fold anywhere, also a long run without white space
    return _Folded(Header(value, "utf-8", header_name=name).encode(linesep="\r\n"))


def _fold(start: int, value: str) -> str | None:
    """Fold an ASCII value before white space (unfolding gives back exactly the value); None
    when a word is too long for one line of 998 octets."""
    lines: list[str] = []
    line, width = "", start
    for word in _WORDS.split(value):
        if line.strip(" \t") and width + len(word) > 78:
            lines.append(line)
            line, width = "", 0
        line += word
        width += len(word)
        if width > MAX_LINE:
            return None
    lines.append(line)
    return "\r\n".join(lines)


def _check_header(name: str, value: str) -> None:
    if _BAD_VALUE.search(value):
        raise InputError(f"header {name} contains a line break or control character (header "
                         "injection refused)")
    if has_surrogate(value):
        raise InputError(f"header {name} contains a lone surrogate (not valid Unicode)")


def _address(addr: str, what: str) -> str:
    if addr.isascii():
        split_address(addr, what)  # raises on anything that is not a bare addr-spec
        return addr
    local, domain = split_address(addr, what)
    return f"{local}@{domain}"


def _check_data(data: str) -> str:
    if "\x00" in data:
        raise InputError("data contains NUL, which no SMTP message may carry (RFC 5322 2.1, "
                         "RFC 6152)")
    if has_surrogate(data):
        raise InputError("data contains a lone surrogate (not valid Unicode)")
    text = data.replace("\r\n", "\n").replace("\r", "\n")
    head, sep, _ = text.partition("\n\n")
    if not sep or ":" not in head.split("\n", 1)[0]:
        raise InputError("data is not an RFC 5322 message: no header section")
    for n, line in enumerate(head.split("\n"), 1):
        if line[:1] in (" ", "\t"):
            if not line.strip(" \t"):
                raise InputError(f"data header line {n} is only white space (readers differ on "
                                 "whether it ends the header section)")
        elif ":" not in line or not _DATA_FIELD.fullmatch(line.partition(":")[0]):
            raise InputError(f"data header line {n} is not a header field (RFC 5322 3.6.8: "
                             "a name of printable ASCII, a colon, the value)")
    for n, line in enumerate(text.split("\n"), 1):
        if len(line) > MAX_LINE // 4 and len(line.encode("utf-8")) > MAX_LINE:
            raise InputError(f"data line {n} is {len(line.encode('utf-8'))} octets; SMTP allows "
                             f"{MAX_LINE} (RFC 5322 2.1.1): encode the body (quoted-printable or "
                             "base64) or give subject and text/html for kmta to compose")
    return text.replace("\n", "\r\n")
