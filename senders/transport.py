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

from kmta.policy.destinations import refusal
from kmta.policy.reply import Reply
from kmta.policy.smtpext import mail_options, needs, smtp_address
from kmta.policy.tls import requirement
from schemas import Envelope, MxHost, TlsPolicy
from schemas.events import TlsInfo
from senders.tls import StartTls, TlsRefused, satisfies

__all__ = ["ConnectFailed", "Connection", "Outcome", "SmtpTransport", "Transport"]


@dataclass(frozen=True)
class Outcome:
    reply: Reply
    accepted: bool
    mx: str | None = None
    stage: str = "data"
    connection_lost: bool = False
    tls: TlsInfo | None = None


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
                      connect_timeout: float, tls: str | None = None,
                      sts: TlsPolicy | None = None) -> Connection: ...


def _internal(code: int, enhanced: str, text: str) -> Reply:
    return Reply(code=code, enhanced_code=enhanced, text=text, internal=True)


class SmtpConnection:
    def __init__(self, smtp: aiosmtplib.SMTP, mx: str, tls: TlsInfo | None = None) -> None:
        self._smtp = smtp
        self.mx = mx
        self.tls = tls
        self.delivered = 0
        self._closed = False

    @property
    def usable(self) -> bool:
        return not self._closed and self._smtp.is_connected

    async def deliver(self, env: Envelope, timeout: float) -> Outcome:
        if not satisfies(self.tls, self.mx, env):  # MTA-STS: on a connection of its own
            self._closed = True
            return Outcome(_internal(451, "4.7.5", f"MTA-STS policy of {env.domain} needs a "
                                     f"verified TLS connection to a listed MX"),
                           False, self.mx, "tls", True, self.tls)
        try:
            data = env.data
        except UnicodeError:  # a lone surrogate: the router refuses it, never sendable anyway
            return Outcome(_internal(554, "5.6.0", "message text is not valid Unicode"), False,
                           self.mx, "data", tls=self.tls)
        sender, rcpt = smtp_address(env.sender), smtp_address(env.rcpt)
        opts, refused = mail_options(needs(sender, rcpt, data), self._smtp.supports_extension,
                                     self.mx)
        if refused is not None:  # nothing was sent: the connection stays usable
            return Outcome(refused, False, self.mx, "mail", tls=self.tls)
        try:
            _, msg = await asyncio.wait_for(
                self._smtp.sendmail(sender, [rcpt], data, mail_options=opts),
                timeout)
        except aiosmtplib.SMTPRecipientsRefused as e:
            r = e.recipients[0]
            return self._fail(Reply.parse(r.code, r.message), "rcpt")
        except aiosmtplib.SMTPSenderRefused as e:
            return self._fail(Reply.parse(e.code, e.message), "mail")
        except aiosmtplib.SMTPResponseException as e:
            return self._fail(Reply.parse(e.code, e.message), "data")
        except (aiosmtplib.SMTPTimeoutError, TimeoutError):
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
        return Outcome(Reply.parse(code, text), True, self.mx, tls=self.tls)

    def _fail(self, reply: Reply, stage: str) -> Outcome:
        lost = reply.code == 421 or not self._smtp.is_connected
        if lost:
            self._closed = True
        return Outcome(reply, False, self.mx, stage, lost, self.tls)

    async def close(self) -> None:
        self._closed = True
        try:
            if self._smtp.is_connected:
                await asyncio.wait_for(self._smtp.quit(), 5)
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            self._smtp.close()


class SmtpTransport:
    """Connects with aiosmtplib to the first reachable MX address inside the allowed networks."""

    def __init__(self, port: int, helo_name: str, allowed_networks: Sequence[str],
                 tls: str = "opportunistic", ca_file: str | None = None,
                 allow_special: Sequence[str] = ()) -> None:
        self._port = port
        self._helo = helo_name
        self._nets = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
        self._special = [ipaddress.ip_network(n, strict=False) for n in allow_special]
        self._tls_default = tls
        self._tls = StartTls(ca_file)

    def _client(self, ip: str, source_ip: str | None, timeout: float) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(hostname=ip, port=self._port, local_hostname=self._helo,
                               source_address=(source_ip, 0) if source_ip else None,
                               timeout=timeout, start_tls=False, validate_certs=False)

    async def _plain(self, ip: str, source_ip: str | None, timeout: float) -> aiosmtplib.SMTP:
        smtp = self._client(ip, source_ip, timeout)
        try:
            await smtp.connect()
            await smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    def refusal(self, ip: str) -> str | None:
        """Why ``ip`` must not be connected to (kmta.policy.destinations), None if it may."""
        return refusal(ip, self._nets, self._special)

    def allowed(self, ip: str) -> bool:
        return self.refusal(ip) is None

    async def connect(self, mx: Sequence[MxHost], source_ip: str | None,
                      connect_timeout: float, tls: str | None = None,
                      sts: TlsPolicy | None = None) -> SmtpConnection:
        """``tls``: the ISP's level (None: the transport's default); ``sts``: the recipient
        domain's MTA-STS enforce policy, if any."""
        req = requirement(tls, self._tls_default, sts)
        last: Outcome | None = None
        refused: list[str] = []
        for host in mx:
            if not req.allows_mx(host.host):
                last = last or Outcome(_internal(451, "4.7.5", f"MX {host.host} is not in the "
                                                 f"MTA-STS policy ({', '.join(req.mx_patterns)})"),
                                       False, host.host, "connect", True)
                continue
            for ip in host.ips:
                why = self.refusal(ip)
                if why is not None:
                    refused.append(f"{host.host}[{ip}]: {why}")
                    continue
                smtp = self._client(ip, source_ip, connect_timeout)
                t0 = time.monotonic()
                try:
                    await smtp.connect()
                    await smtp.ehlo()
                    smtp, info = await self._tls.start(
                        smtp, host.host, req,
                        lambda ip=ip: self._plain(ip, source_ip, connect_timeout))
                    return SmtpConnection(smtp, host.host, info)
                except TlsRefused as e:
                    smtp.close()
                    last = Outcome(e.reply, False, host.host, "connect", True)
                except aiosmtplib.SMTPResponseException as e:
                    smtp.close()
                    last = Outcome(Reply.parse(e.code, e.message), False, host.host, "connect",
                                   True)
                    if e.code and 500 <= e.code < 600:
                        break
                except (aiosmtplib.SMTPTimeoutError, TimeoutError):
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
                                         "destination refused: " + "; ".join(refused[:5])),
                               False, None, "connect", True)
            else:
                last = Outcome(_internal(451, "4.4.4", "no MX address to connect to"), False,
                               None, "connect", True)
        raise ConnectFailed(last)
