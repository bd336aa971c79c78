"""A small SMTP client that pipelines: RFC 5321 with PIPELINING (RFC 2920), CHUNKING (RFC 3030,
``BDAT <n> LAST``) and STARTTLS (RFC 3207, ``loop.start_tls``).

Why not aiosmtplib, which the sender used before: its ``SMTPProtocol`` reads exactly one reply
per command written. A reply that arrives while no command awaits one is dropped on purpose,
and only the first complete reply in a segment is parsed, so commands written ahead lose their
replies; there is no BDAT either. Making it pipeline means overriding ``data_received``,
``read_response`` and the command lock, i.e. most of the class, against private attributes
that change between releases. This client is one ``asyncio.Protocol`` that parses every
complete reply into a queue, so replies are matched to commands in order however the segments
arrive. It keeps aiosmtplib's public helpers for what they did before: the EHLO keyword parsing
(``parse_esmtp_extensions``) and address quoting with its command-injection check
(``quote_address``).

Which commands go together and what the replies mean is decided in ``kmta.policy.flight``;
this module only writes and reads. Per message: ``[RSET] MAIL RCPT DATA`` in one write and the
body after the 354, or with CHUNKING ``[RSET] MAIL RCPT BDAT`` and the message in one write (one
round trip). With DATA, when the caller has the next message at hand as the body goes
(``follow``), the next ``MAIL RCPT DATA`` go in the same write behind the dot: one round trip
per message too, two for a message that goes alone. Lock-step (no PIPELINING offered, or
``[delivery] pipelining = false``) sends one command per round trip, as before. The RSET after
a failed transaction goes in front of the next message's commands instead of costing a round
trip of its own.
"""
from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiosmtplib.email import quote_address
from aiosmtplib.esmtp import parse_esmtp_extensions

from kmta.policy.flight import Plan, Settled, rides, settle, settle_pair, steps
from kmta.policy.reply import Reply

__all__ = ["Disconnected", "Message", "ReplyError", "Response", "SmtpClient", "SmtpError",
           "message", "parse_replies", "quoted", "wire_body"]

MAX_LINE = 8192
MAX_REPLY = 4 * MAX_LINE  # a reply (continuations included) longer than this is refused


class SmtpError(Exception):
    """The SMTP session failed (a malformed reply, the connection closed)."""


class Disconnected(SmtpError):
    pass


class ReplyError(SmtpError):
    """An unexpected reply to the greeting, EHLO or STARTTLS."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code, self.text = code, text


@dataclass(frozen=True)
class Response:
    code: int
    text: str  # the lines' texts joined by "\n", as aiosmtplib gave them

    def reply(self) -> Reply:
        return Reply.parse(self.code, self.text)


def parse_replies(buf: bytearray) -> list[Response]:
    """Take every complete reply off the front of ``buf`` (a partial one stays)."""
    out: list[Response] = []
    while True:
        pos, lines = 0, []
        while True:
            end = buf.find(b"\n", pos)
            if end < 0:
                if len(buf) > MAX_REPLY:
                    raise SmtpError("reply too long")
                return out
            line = bytes(buf[pos:end + 1])
            if len(line) > MAX_LINE:
                raise SmtpError("reply line too long")
            if not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
                raise SmtpError(f"malformed reply line: {line[:80]!r}")
            pos = end + 1
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                break
        out.append(Response(int(line[:3]), b"\n".join(lines).decode("utf-8", "surrogateescape")))
        del buf[:pos]


def wire_body(data: bytes, crlf: bool = False) -> bytes:
    """The message in canonical form: CRLF line ends (lone CR or LF converted, as aiosmtplib
    did), ending in CRLF. BDAT sends this as it is; DATA dot-stuffs it (``_dotted``).
    ``crlf``: the line ends are known to be CRLF only (``Envelope.crlf``, set by the router
    that composed the message): not checked again, only the last one added if missing."""
    # bytes methods, not a regex substitution (~1.2 ms for 100 KB): a composed message is
    # CRLF already, which three counts (~0.23 ms for 100 KB, what ``crlf`` saves) show; else
    # the same conversion as the regex r"\r\n|\n|\r(?!\n)" -> CRLF (a unit test compares
    # the two)
    if not crlf:
        n = data.count(b"\r\n")
        if not (data.count(b"\r") == n == data.count(b"\n")):
            data = (data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                    .replace(b"\n", b"\r\n"))
    return data if data.endswith(b"\r\n") else data + b"\r\n"


_DOT_LINE = re.compile(rb"\n\.")  # a line that starts with a dot (after the first)


def _dotted(body: bytes) -> bytes:
    """A canonical body (``wire_body``) dot-stuffed for DATA (RFC 5321 4.5.2), with the end
    of data: a dot at the start of a line gets another in front."""
    # a search first: bulk mail seldom has a line that starts with a dot, and sre finds the
    # two bytes in 100 KB in ~35 us where bytes.replace (and ``in``) take ~95 us on Python
    # 3.11 (the regex substitution ~0.6 ms); where there is one, the replace as before
    if _DOT_LINE.search(body) is not None:
        body = body.replace(b"\n.", b"\n..")
    return (b"." + body if body.startswith(b".") else body) + b".\r\n"


@dataclass(frozen=True)
class Message:
    """One message as its command lines and its canonical body (``message``)."""

    mail: bytes  # "MAIL FROM:<...> [options]" and CRLF
    rcpt: bytes
    body: bytes  # wire_body(data)

    def commands(self, todo: Sequence[str]) -> bytes:
        """The bytes of ``todo``'s steps (``kmta.policy.flight.steps``); BDAT with the body."""
        fixed = {"rset": b"RSET\r\n", "mail": self.mail, "rcpt": self.rcpt, "data": b"DATA\r\n"}
        return b"".join(b"BDAT %d LAST\r\n" % len(self.body) + self.body if x == "bdat"
                        else fixed[x] for x in todo)


# an ASCII dot-atom local part at an LDH domain: what bulk mail's addresses are, and what
# aiosmtplib's ``quote_address`` returns unchanged between angle brackets
_PLAIN = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def quoted(address: str) -> str:
    """``quote_address(address)``: a plain address (``_PLAIN``) directly, anything else through
    aiosmtplib's parser and its command-injection check (``email.utils.parseaddr``, ~12 us an
    address: two a message, 6-8 % of a sender's time in a 2 KB profile, docs/benchmark.md). A
    hypothesis test compares the two on plain and arbitrary addresses."""
    if _PLAIN.fullmatch(address):
        return f"<{address}>"
    return quote_address(address)


def message(sender: str, rcpt: str, options: Sequence[str], data: bytes,
            crlf: bool = False) -> Message:
    """``crlf``: as for ``wire_body``. Raises ValueError for an address that cannot go on a
    command line (aiosmtplib's ``quote_address`` check), UnicodeEncodeError for one that needs
    SMTPUTF8 without it."""
    enc = "utf-8" if "SMTPUTF8" in options else "ascii"
    mail = b" ".join([b"MAIL FROM:" + quoted(sender).encode(enc),
                      *(o.encode("ascii") for o in options)])
    return Message(mail + b"\r\n", b"RCPT TO:" + quoted(rcpt).encode(enc) + b"\r\n",
                   wire_body(data, crlf))


@dataclass
class _Flight:
    """A write that carried one message's end of data and the next message's commands:
    ``first``'s steps (ending with ``dot``), ``second``'s, the next message, and the replies of
    both in arrival order (``kmta.policy.flight.settle_pair``)."""

    first: list[str]
    second: list[str]
    msg: Message
    got: list[Reply]


class _Wire(asyncio.Protocol):
    """Bytes in, complete replies queued in arrival order; write flow control for drain."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.replies: deque[Response] = deque()
        self.closed: str | None = None  # why the connection ended
        self.error: SmtpError | None = None
        self._wake: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return
        self.buf += data
        try:
            self.replies.extend(parse_replies(self.buf))
        except SmtpError as e:
            self.error = e
        self._notify()

    def eof_received(self) -> bool:
        self.closed = self.closed or "closed by the server"
        self._notify()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closed or ((str(exc) or type(exc).__name__) if exc else "closed")
        self.transport = None
        self._notify()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise Disconnected(self.closed or "closed")
        self.transport.write(data)

    async def drain(self) -> None:
        if self._paused and self.closed is None:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self.closed is not None:
            raise Disconnected(self.closed)

    async def reply(self) -> Response:
        while True:
            if self.replies:
                return self.replies.popleft()
            if self.error is not None:
                raise self.error
            if self.closed is not None:
                raise Disconnected(self.closed)
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake


class SmtpClient:
    """One SMTP session. ``timeout`` bounds the connect and each command before the mail
    transactions (greeting, EHLO, STARTTLS); the caller bounds a whole transaction."""

    def __init__(self, wire: _Wire, helo: str, timeout: float) -> None:
        self._wire = wire
        self.helo = helo
        self.timeout = timeout
        self.extensions: dict[str, str] = {}
        self.reset_needed = False  # a failed transaction may be open: RSET before the next
        self._flight: _Flight | None = None  # commands written behind the last end of data

    @classmethod
    async def connect(cls, host: str, port: int, *, helo: str, source_address: str | None,
                      timeout: float) -> SmtpClient:
        """Connected and greeted (220), before EHLO."""
        loop = asyncio.get_running_loop()
        wire = _Wire()
        await asyncio.wait_for(loop.create_connection(
            lambda: wire, host, port,
            local_addr=(source_address, 0) if source_address else None), timeout)
        client = cls(wire, helo, timeout)
        try:
            greeting = await client.read(timeout)
            if greeting.code != 220:
                raise ReplyError(greeting.code, greeting.text)
        except BaseException:
            client.close()
            raise
        return client

    @property
    def is_connected(self) -> bool:
        t = self._wire.transport
        return t is not None and not t.is_closing() and self._wire.closed is None

    def supports(self, extension: str) -> bool:
        return extension.lower() in self.extensions

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        t = self._wire.transport
        return None if t is None else t.get_extra_info("ssl_object")

    async def read(self, timeout: float | None = None) -> Response:
        return await asyncio.wait_for(self._wire.reply(), timeout or self.timeout)

    async def command(self, line: str, timeout: float | None = None) -> Response:
        self._wire.write(line.encode("ascii") + b"\r\n")
        return await self.read(timeout)

    async def ehlo(self) -> None:
        r = await self.command(f"EHLO {self.helo}")
        if r.code != 250:
            raise ReplyError(r.code, r.text)
        self.extensions, _ = parse_esmtp_extensions(r.text)

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        """STARTTLS and the TLS handshake; EHLO again is the caller's."""
        r = await self.command("STARTTLS")
        if r.code != 220:
            raise ReplyError(r.code, r.text)
        wire = self._wire
        if wire.buf or wire.replies:  # RFC 3207 §4.2: plain text after the 220 is an injection
            raise SmtpError("the server sent data after its STARTTLS reply")
        if wire.transport is None:
            raise Disconnected(wire.closed or "closed")
        tls = await asyncio.get_running_loop().start_tls(
            wire.transport, wire, context, server_hostname=server_hostname,
            ssl_handshake_timeout=self.timeout)
        if tls is None:
            raise Disconnected("closed during the TLS handshake")
        wire.transport = tls
        self.extensions = {}

    async def send(self, msg: Message, plan: Plan, mx: str,
                   follow: Callable[[], Message | None] | None = None,
                   go: Callable[[], bool] | None = None) -> Settled:
        """One message: the commands as ``plan`` groups them, every reply matched in order
        (``kmta.policy.flight``). ``follow``: asked once, when this message's body is about to
        go (``rides``), for the next message to write behind its dot (None: none); that
        message must be the next ``send``, which then only reads its replies. ``go``: asked
        for a message written ahead once its 354 came, whether its body may still go; if not,
        the session is dropped before the body (a transaction without its end of data is not
        delivered, RFC 5321 4.1.1.4) and the message is ``unsent``. ``unsent``: nothing of
        ``msg`` was answered or sent, the session ended first. The caller bounds the time."""
        flight, self._flight = self._flight, None
        if flight is not None and flight.msg is not msg:  # out of step with the server
            self.close()
            flight = None
        if flight is not None:  # its commands went behind the previous message's dot
            s = await self._answers(flight, mx)
            sent, got = list(flight.second), flight.got[len(flight.first):]
            if s.state == "go" and go is not None and not go():
                self.close()
                return Settled("unsent", lost=True)
        else:
            if not self.is_connected:
                return Settled("unsent", lost=True)
            stale = [x.reply() for x in self._wire.replies]  # said while nobody asked
            self._wire.replies.clear()
            closing = next((x for x in stale if x.code == 421), None)
            if closing is not None:  # "421 idle too long" before it hung up: the session is over
                self.close()
                return Settled("failed", closing, "mail", lost=True)
            todo = steps(plan, self.reset_needed)
            groups = [todo] if plan.pipelined else [[x] for x in todo]
            sent, got = [], []
            s = Settled("go")
            try:
                for group in groups:
                    s = await self._exchange(group, msg.commands(group), sent, got, mx)
                    if s.state != "go":
                        break
            except Disconnected as e:
                s = settle(sent, got, mx, str(e))
        if s.state == "go":  # 354: the body
            s = await self._body(msg, plan, sent, got, mx, follow)
        if s.state == "failed" and s.lone_dot:
            try:
                self._wire.write(b".\r\n")
                await self._wire.reply()
            except Disconnected:
                s = Settled("failed", s.reply, s.stage, lost=True)
        self.reset_needed = s.state == "failed" and s.reset
        if s.lost:
            self.close()
        return s

    async def _body(self, msg: Message, plan: Plan, sent: list[str], got: list[Reply],
                    mx: str, follow: Callable[[], Message | None] | None) -> Settled:
        """The dot-stuffed body and its end of data, with the next message's commands behind
        it when ``follow`` has one (``rides``); reads this message's final reply only."""
        payload = _dotted(msg.body)
        nxt = follow() if follow is not None and rides(plan) else None
        if nxt is not None:
            second = steps(plan, False)  # this transaction ends with its final reply: no RSET
            payload += nxt.commands(second)
            # ``got`` is shared: this message's final reply, then the next one's, go into it
            self._flight = _Flight([*sent, "dot"], second, nxt, got)
        try:
            return await self._exchange(["dot"], payload, sent, got, mx)
        except Disconnected as e:
            return settle(sent, got, mx, str(e))

    async def _answers(self, f: _Flight, mx: str) -> Settled:
        """The replies to commands written behind the previous message's dot."""
        n = len(f.first) + len(f.second)
        try:
            while len(f.got) < n:
                f.got.append((await self._wire.reply()).reply())
                s = settle_pair(f.first, f.second, f.got, mx)[1]
                if s.state == "failed" and s.lost:
                    return s  # 421: the server is gone, the rest will not come
        except Disconnected as e:
            return settle_pair(f.first, f.second, f.got, mx, str(e))[1]
        return settle_pair(f.first, f.second, f.got, mx)[1]

    async def _exchange(self, group: list[str], payload: bytes, sent: list[str],
                        got: list[Reply], mx: str) -> Settled:
        self._wire.write(payload)
        sent.extend(group)
        await self._wire.drain()
        for _ in group:
            got.append((await self._wire.reply()).reply())
            s = settle(sent, got, mx)
            if s.state == "failed" and s.lost:
                return s  # 421: the server is gone, the rest will not come
        return settle(sent, got, mx)

    async def quit(self) -> None:
        try:
            # (with commands written ahead the server may be reading a message: no QUIT then,
            # closing drops that transaction)
            if self.is_connected and self._flight is None:
                await self.command("QUIT")
        finally:
            self.close()

    def close(self) -> None:
        self._flight = None  # what was written ahead is not read any more: ``unsent``
        t = self._wire.transport
        if t is not None and not t.is_closing():
            t.close()
