"""The SMTP receiver of the return-path domains: RCPT is refused for any other domain, and a
message is answered 250 only once the broker has it (acks=all, idempotent producer): a crash
before the answer makes the client retry, so nothing is lost (a crash between the write and
the answer gives a duplicate, which the processor's events tolerate: at least once)."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from kmta.config import Config
from kmta.pipeline.metrics import INBOUND_RECEIVED
from schemas import InboundMail

log = logging.getLogger(__name__)

__all__ = ["InboundHandler", "Receiver"]


class InboundHandler:
    """aiosmtpd handler: checks RCPT domains, writes DATA to the inbound topic."""

    def __init__(self, config: Config, producer: Any, node: str) -> None:
        self._c = config
        self._producer = producer
        self._node = node
        self._domains = config.return_path_domains()
        self._topic = config.topic("inbound")
        self.accepted = 0
        self.refused_rcpt = 0

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        domain = address.rpartition("@")[2].strip().rstrip(".").lower()
        if "@" not in address or domain not in self._domains:
            self.refused_rcpt += 1
            return "550 5.7.1 relaying denied: not a domain of this server"
        if len(envelope.rcpt_tos) >= 100:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        peer = session.peer
        rec = InboundMail.of(
            raw, mail_from=envelope.mail_from or "", rcpt=list(envelope.rcpt_tos),
            peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
            helo=session.host_name, received_at=time.time(), node=self._node)
        key = envelope.rcpt_tos[0].lower().encode()
        try:
            await self._producer.send_and_wait(self._topic, rec.to_json(), key=key)
        except Exception as e:  # noqa: BLE001 - any broker failure: the client retries later
            log.warning("inbound: could not write to %s: %s", self._topic, e)
            INBOUND_RECEIVED.labels("tempfailed").inc()
            return "451 4.3.0 temporary failure, try again later"
        self.accepted += 1
        INBOUND_RECEIVED.labels("accepted").inc()
        return "250 2.0.0 OK: queued"


class Receiver:
    """The listening SMTP server of one ``kmta inbound`` process."""

    def __init__(self, config: Config, producer: Any, node: str) -> None:
        self.handler = InboundHandler(config, producer, node)
        self._c = config
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> tuple[str, int]:
        host, port = self._c.inbound.address()
        cfg = self._c.inbound

        def factory() -> SMTP:
            return SMTP(self.handler, hostname=cfg.hostname, ident="kmta inbound",
                        data_size_limit=cfg.max_message_bytes, enable_SMTPUTF8=True,
                        decode_data=False)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, host, port)
        sock = self._server.sockets[0].getsockname()
        log.info("kmta inbound: SMTP on %s:%s for %s", sock[0], sock[1],
                 ", ".join(sorted(self._c.return_path_domains())) or "(no domains!)")
        return sock[0], sock[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
