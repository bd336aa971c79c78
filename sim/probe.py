"""A small SMTP probe client for the simulators (tests, demos): one outcome per command step.

Not kmta's sender: it sends one recipient per message and reports the provider's reply as
``ProbeResult(code, message, stage)`` instead of raising.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import aiosmtplib

__all__ = ["ProbeClient", "ProbeResult", "send_one"]


@dataclass(frozen=True)
class ProbeResult:
    code: int
    message: str
    # Where it ended: connect | mail | rcpt | data ("data" with 250 = accepted).
    # Code 0: no reply (disconnected, timed out).
    stage: str

    @property
    def accepted(self) -> bool:
        return self.stage == "data" and self.code == 250


class ProbeClient:
    """One SMTP connection from ``source_ip`` (a loopback address) to a simulated provider."""

    def __init__(
        self, host: str, port: int, source_ip: str | None = None, timeout: float = 10.0
    ) -> None:
        self.smtp = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            timeout=timeout,
            local_hostname="probe.sim.test",
            source_address=(source_ip, 0) if source_ip else None,
            start_tls=False,
            use_tls=False,
        )

    @property
    def connected(self) -> bool:
        return self.smtp.is_connected

    async def connect(self) -> ProbeResult:
        try:
            response = await self.smtp.connect()
            await self.smtp.ehlo()
        except aiosmtplib.SMTPResponseException as e:
            return ProbeResult(e.code, e.message, "connect")
        except aiosmtplib.SMTPException as e:
            return ProbeResult(0, str(e), "connect")
        return ProbeResult(response.code, response.message, "connect")

    async def send(
        self,
        rcpt: str,
        sender: str = "probe@sender.test",
        message_id: str | None = None,
        body: str = "probe\r\n",
    ) -> ProbeResult:
        message_id = message_id or f"<{uuid.uuid4().hex}@sender.test>"
        data = (
            f"From: {sender}\r\nTo: {rcpt}\r\nSubject: probe\r\nMessage-ID: {message_id}\r\n"
            f"X-Kmta-Id: {message_id.strip('<>').split('@')[0]}\r\n\r\n{body}"
        )
        stage = "mail"
        try:
            await self.smtp.mail(sender)
            stage = "rcpt"
            await self.smtp.rcpt(rcpt)
            stage = "data"
            response = await self.smtp.data(data)
        except aiosmtplib.SMTPResponseException as e:
            if self.smtp.is_connected and e.code != 421:
                try:
                    await self.smtp.rset()
                except aiosmtplib.SMTPException:
                    pass
            return ProbeResult(e.code, e.message, stage)
        except aiosmtplib.SMTPException as e:  # disconnected, timeout: no reply code
            return ProbeResult(0, str(e), stage)
        return ProbeResult(response.code, response.message, "data")

    async def close(self) -> None:
        if self.smtp.is_connected:
            try:
                await self.smtp.quit()
            except aiosmtplib.SMTPException:
                self.smtp.close()

    async def __aenter__(self) -> ProbeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def send_one(
    host: str, port: int, rcpt: str, source_ip: str | None = None, **kwargs: str
) -> ProbeResult:
    """Connect, send one message to ``rcpt``, quit; the first refusal ends it."""
    client = ProbeClient(host, port, source_ip)
    greeting = await client.connect()
    if greeting.code != 220:
        return greeting
    try:
        return await client.send(rcpt, **kwargs)
    finally:
        await client.close()
