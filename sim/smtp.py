"""Simulated mailbox provider: an aiosmtpd server whose replies come from :class:`ProviderRules`.

The protocol engine stays aiosmtpd's; :class:`SimSMTP` only adds a connect/disconnect hook,
closes the connection after a 421 reply (as real providers do) and, for a ``silent`` provider,
accepts the connection and never says a word. The behaviour lives in
:class:`ProviderHandler`, which asks the rules, logs the event and keeps accepted messages as
small records (Message-ID, kmta id, size; never the body).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from sim.behaviour import ProviderBehaviour, ProviderRules, Verdict
from sim.eventlog import EventLog
from sim.net import require_loopback

__all__ = ["KMTA_ID_HEADER", "AcceptedMessage", "ProviderHandler", "ProviderSim"]

KMTA_ID_HEADER = "x-kmta-id"
_HEADER_SCAN_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    time: float
    ip: str
    recipients: tuple[str, ...]
    message_id: str | None
    kmta_id: str | None
    size: int


@dataclass(slots=True)
class _Conn:
    ip: str
    port: int = 0
    messages: int = 0
    open: bool = False


def _header_values(content: bytes, names: tuple[str, ...]) -> dict[str, str]:
    """Values of the wanted headers (lower-case names), read from the header block only."""
    head = content[:_HEADER_SCAN_LIMIT]
    end = head.find(b"\r\n\r\n")
    if end < 0:
        end = head.find(b"\n\n")
    if end >= 0:
        head = head[:end]
    found: dict[str, str] = {}
    current: str | None = None
    for raw in head.split(b"\n"):
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        if line[:1] in (" ", "\t"):
            if current is not None:  # folded continuation of a wanted header
                found[current] = (found[current] + " " + line.strip()).strip()
            continue
        name, sep, value = line.partition(":")
        current = None
        key = name.strip().lower()
        if sep and key in names and key not in found:
            found[key] = value.strip()
            current = key
    return found


class SimSMTP(SMTP):
    """aiosmtpd's protocol plus connect/disconnect hooks and close-after-421."""

    sim_conn: _Conn | None = None

    async def _handle_client(self) -> None:
        handler: ProviderHandler = self.event_handler
        assert self.session is not None
        refusal = handler.handle_CONNECT(self, self.session)
        if refusal is not None:
            await self.push(refusal)
            if self.transport is not None:
                self.transport.close()
            return
        if handler.rules.behaviour.silent:
            # a dead provider behind a live listener: the connection stays open, and nothing is
            # ever said (no banner), until the client gives up (its EOF cancels us)
            try:
                await asyncio.get_running_loop().create_future()
            finally:
                if self.transport is not None:
                    self.transport.close()
        await super()._handle_client()

    def connection_lost(self, error: Exception | None) -> None:
        try:
            self.event_handler.handle_DISCONNECT(self)
        finally:
            super().connection_lost(error)

    async def push(self, status: Any) -> None:
        await super().push(status)
        if isinstance(status, str) and status.startswith("421") and self.transport is not None:
            # 421 means "closing transmission channel": the provider hangs up.
            self.transport.close()


class ProviderHandler:
    """aiosmtpd handler: asks :class:`ProviderRules`, logs, records accepted messages."""

    def __init__(
        self,
        name: str,
        rules: ProviderRules,
        log: EventLog,
        accepted: deque[AcceptedMessage],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.rules = rules
        self.log = log
        self.accepted = accepted
        self.clock = clock
        self.latency = rules.behaviour.latency

    async def _pause(self) -> None:
        if self.latency > 0:
            await asyncio.sleep(self.latency)

    def _refuse(self, ip: str, verdict: Verdict, **fields: Any) -> str:
        self.log.write(
            self.name, verdict.event, ip, reply=verdict.reply.split("\r\n")[-1],
            block=True if verdict.block else None, **fields
        )
        return verdict.reply

    # -- connection ------------------------------------------------------------------------
    def handle_CONNECT(self, server: SimSMTP, session: Session) -> str | None:
        ip = session.peer[0]
        verdict = self.rules.on_connect(ip, self.clock())
        if verdict is not None:
            event = "refuse" if verdict.event == "refused" else verdict.event
            self.log.write(self.name, event, ip, reply=verdict.reply)
            return verdict.reply
        server.sim_conn = _Conn(ip, session.peer[1], open=True)
        self.log.write(self.name, "connect", ip, port=session.peer[1])
        return None

    def handle_DISCONNECT(self, server: SimSMTP) -> None:
        conn = server.sim_conn
        if conn is not None and conn.open:
            conn.open = False
            self.rules.on_disconnect(conn.ip)
            self.log.write(self.name, "quit", conn.ip, port=conn.port, messages=conn.messages)

    # -- commands --------------------------------------------------------------------------
    async def handle_EHLO(
        self,
        server: SimSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        await self._pause()
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self,
        server: SimSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        await self._pause()
        conn = server.sim_conn
        assert conn is not None
        verdict = self.rules.on_mail(conn.ip, conn.messages, self.clock())
        if verdict is not None:
            return self._refuse(conn.ip, verdict, sender=address)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.log.write(self.name, "mail", conn.ip, sender=address)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SimSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        await self._pause()
        conn = server.sim_conn
        assert conn is not None
        verdict = self.rules.on_rcpt(conn.ip, envelope.mail_from or "", address, self.clock())
        if verdict is not None:
            return self._refuse(conn.ip, verdict, recipient=address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        self.log.write(self.name, "rcpt", conn.ip, recipient=address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SimSMTP, session: Session, envelope: Envelope) -> str:
        await self._pause()
        conn = server.sim_conn
        assert conn is not None
        content = envelope.original_content or b""
        size = len(content)
        headers = _header_values(content, ("message-id", KMTA_ID_HEADER))
        # Drop the body now: only the small record below is kept.
        envelope.content = envelope.original_content = None
        rcpts = list(envelope.rcpt_tos)
        delay = self.rules.data_delay(rcpts)
        if delay > 0:
            await asyncio.sleep(delay)
        fields = {
            "recipient": rcpts[0] if len(rcpts) == 1 else rcpts,
            "message_id": headers.get("message-id"),
            "kmta_id": headers.get(KMTA_ID_HEADER),
            "size": size,
        }
        verdict = self.rules.on_data(conn.ip, rcpts, self.clock())
        if verdict is not None:
            return self._refuse(conn.ip, verdict, **fields)
        conn.messages += 1
        self.rules.on_accepted(conn.ip, len(rcpts))
        self.accepted.append(
            AcceptedMessage(
                time.time(), conn.ip, tuple(rcpts), fields["message_id"], fields["kmta_id"], size
            )
        )
        self.log.write(self.name, "accepted", conn.ip, **fields)
        return f"250 2.0.0 OK {self.name}-sim queued as {self.rules.behaviour.profile}"


class ProviderSim:
    """One simulated provider listening on ``host:port`` (a loopback address of its own)."""

    def __init__(
        self,
        name: str,
        behaviour: ProviderBehaviour | None = None,
        host: str = "127.0.0.1",
        port: int = 2525,
        *,
        mx_host: str | None = None,
        log: EventLog | None = None,
        keep_accepted: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 60.0,
    ) -> None:
        self.name = name
        self.behaviour = behaviour or ProviderBehaviour()
        self.host = require_loopback(host, "listen address")
        self.port = port
        self.mx_host = mx_host or f"mx.{name}.sim.test"
        self._own_log = log is None
        self.log = log or EventLog(None)
        self.rules = ProviderRules(self.behaviour, self.mx_host)
        self.accepted: deque[AcceptedMessage] = deque(maxlen=keep_accepted)
        self.handler = ProviderHandler(name, self.rules, self.log, self.accepted, clock)
        self._timeout = timeout
        self._server: asyncio.Server | None = None
        self._protocols: weakref.WeakSet[SimSMTP] = weakref.WeakSet()

    def _make_protocol(self) -> SimSMTP:
        proto = SimSMTP(
            self.handler,
            hostname=self.mx_host,
            ident="kmta isp-sim",
            timeout=self._timeout,
            loop=asyncio.get_running_loop(),
        )
        self._protocols.add(proto)
        return proto

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_protocol,
            host=self.host,
            port=self.port,
            backlog=1024,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for proto in list(self._protocols):
                if proto.transport is not None:
                    proto.transport.close()
            await self._server.wait_closed()
            self._server = None
        if self._own_log:
            self.log.close()

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per source IP: connections, refused, accepted, throttled, blocked, ..."""
        return self.rules.stats()

    def totals(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for counters in self.stats().values():
            for key, value in counters.items():
                total[key] = total.get(key, 0) + value
        return total

    async def __aenter__(self) -> ProviderSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
