"""The one seam between the sender and SMTP: ``Connection.deliver(envelope) -> Outcome``.

aiosmtplib exceptions are translated into outcomes right here; nothing above this module sees a
library exception. Replies kmta makes up itself (timeouts, refused connections, destinations
outside the allowed networks) are marked ``internal`` so provider patterns never match them.
"""
from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import aiosmtplib

from kmta.policy.reply import Reply
from schemas import Envelope, MxHost

__all__ = ["Outcome", "Connection", "Transport", "SmtpTransport", "ConnectFailed"]


@dataclass(frozen=True)
class Outcome:
    reply: Reply
    accepted: bool
    mx: str | None = None
    stage: str = "data"
    connection_lost: bool = False

    @property
    def permanent(self) -> bool:
        return not self.accepted and self.reply.code is not None and 500 <= self.reply.code < 600


class ConnectFailed(Exception):
    """No MX could be connected; ``outcome`` says why (carried to every waiting message)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reply.line())
        self.outcome = outcome


class Connection(Protocol):
    mx: str
    delivered: int

    @property
    def usable(self) -> bool: ...

    async def deliver(self, env: Envelope, timeout: float) -> Outcome: ...

    async def close(self) -> None: ...


class Transport(Protocol):
    async def connect(self, mx: Sequence[MxHost], source_ip: str | None,
                      connect_timeout: float) -> Connection: ...


def _internal(code: int, enhanced: str, text: str) -> Reply:
    return Reply(code=code, enhanced_code=enhanced, text=text, internal=True)


class SmtpConnection:
    def __init__(self, smtp: aiosmtplib.SMTP, mx: str) -> None:
        self._smtp = smtp
        self.mx = mx
        self.delivered = 0
        self._closed = False

    @property
    def usable(self) -> bool:
        return not self._closed and self._smtp.is_connected

    async def deliver(self, env: Envelope, timeout: float) -> Outcome:
        data = env.data.encode("utf-8")
        opts = []
        if not data.isascii() and self._smtp.supports_extension("8bitmime"):
            opts.append("BODY=8BITMIME")
        try:
            errors, msg = await asyncio.wait_for(
                self._smtp.sendmail(env.sender, [env.rcpt], data, mail_options=opts),
                timeout)
        except aiosmtplib.SMTPRecipientsRefused as e:
            r = e.recipients[0]
            return self._fail(Reply.parse(r.code, r.message), "rcpt")
        except aiosmtplib.SMTPSenderRefused as e:
            return self._fail(Reply.parse(e.code, e.message), "mail")
        except aiosmtplib.SMTPResponseException as e:
            return self._fail(Reply.parse(e.code, e.message), "data")
        except (aiosmtplib.SMTPTimeoutError, asyncio.TimeoutError, TimeoutError):
            self._closed = True
            return Outcome(_internal(451, "4.4.2", f"timed out talking to {self.mx}"), False,
                           self.mx, "data", True)
        except (aiosmtplib.SMTPException, OSError) as e:
            self._closed = True
            return Outcome(_internal(451, "4.4.2", f"connection to {self.mx} lost: {e}"),
                           False, self.mx, "data", True)
        except Exception as e:  # noqa: BLE001 - any other library error: this message only
            # (e.g. an address the library cannot encode); the session state is unknown
            self._closed = True
            self._smtp.close()
            return Outcome(_internal(451, "4.3.0", f"not sent: {type(e).__name__}: {e}"),
                           False, self.mx, "mail", True)
        self.delivered += 1
        code, text = 250, msg
        return Outcome(Reply.parse(code, text), True, self.mx)

    def _fail(self, reply: Reply, stage: str) -> Outcome:
        lost = reply.code == 421 or not self._smtp.is_connected
        if lost:
            self._closed = True
        return Outcome(reply, False, self.mx, stage, lost)

    async def close(self) -> None:
        self._closed = True
        try:
            if self._smtp.is_connected:
                await asyncio.wait_for(self._smtp.quit(), 5)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            self._smtp.close()


class SmtpTransport:
    """Connects with aiosmtplib to the first reachable MX address inside the allowed networks."""

    def __init__(self, port: int, helo_name: str, allowed_networks: Sequence[str],
                 start_tls: bool = False) -> None:
        self._port = port
        self._helo = helo_name
        self._nets = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
        self._start_tls = start_tls

    def allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in n for n in self._nets)

    async def connect(self, mx: Sequence[MxHost], source_ip: str | None,
                      connect_timeout: float) -> SmtpConnection:
        last: Outcome | None = None
        refused: list[str] = []
        for host in mx:
            for ip in host.ips:
                if not self.allowed(ip):
                    refused.append(f"{host.host}[{ip}]")
                    continue
                smtp = aiosmtplib.SMTP(
                    hostname=ip, port=self._port, local_hostname=self._helo,
                    source_address=(source_ip, 0) if source_ip else None,
                    timeout=connect_timeout, start_tls=None if self._start_tls else False,
                    validate_certs=False)
                t0 = time.monotonic()
                try:
                    await smtp.connect()
                    await smtp.ehlo()
                    return SmtpConnection(smtp, host.host)
                except aiosmtplib.SMTPResponseException as e:
                    smtp.close()
                    last = Outcome(Reply.parse(e.code, e.message), False, host.host, "connect",
                                   True)
                    if e.code and 500 <= e.code < 600:
                        break
                except (aiosmtplib.SMTPTimeoutError, asyncio.TimeoutError, TimeoutError):
                    smtp.close()
                    last = Outcome(_internal(451, "4.4.1", f"connection to {host.host}[{ip}] "
                                             f"timed out after {time.monotonic() - t0:.0f}s"),
                                   False, host.host, "connect", True)
                except (aiosmtplib.SMTPException, OSError) as e:
                    smtp.close()
                    last = Outcome(_internal(451, "4.4.1",
                                             f"cannot connect to {host.host}[{ip}]: {e}"),
                                   False, host.host, "connect", True)
                except Exception as e:  # noqa: BLE001 - any other library error, as above
                    smtp.close()
                    last = Outcome(_internal(451, "4.4.1", f"cannot connect to {host.host}"
                                             f"[{ip}]: {type(e).__name__}: {e}"),
                                   False, host.host, "connect", True)
        if last is None:
            if refused:
                last = Outcome(_internal(550, "5.7.0",
                                         "destination outside delivery.allowed_networks: "
                                         + ", ".join(refused[:5])),
                               False, None, "connect", True)
            else:
                last = Outcome(_internal(451, "4.4.4", "no MX address to connect to"), False,
                               None, "connect", True)
        raise ConnectFailed(last)
