"""The one seam between the sender and SMTP: ``Connection.deliver(envelope) -> Outcome``.

The SMTP client is ``senders/smtpclient.py`` (PIPELINING and CHUNKING where the server offers
them and ``[delivery] pipelining`` allows; why it is not aiosmtplib is said there); what its
replies mean is ``kmta.policy.flight``. ``deliver`` may be handed the lane's next message
(``Ahead``): with pipelined DATA its commands then go behind this message's dot, and the
connection's next ``deliver`` is for it. Client errors are translated into outcomes right here;
nothing above this module sees one. Replies kmta makes up itself (timeouts, refused
connections, destinations outside the allowed networks) are marked ``internal`` so provider
patterns never match them.
"""
from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kmta.policy.destinations import refusal
from kmta.policy.flight import Plan, plan
from kmta.policy.reply import Reply
from kmta.policy.smtpext import mail_options, needs, smtp_address
from kmta.policy.tls import TlsRequirement, requirement
from schemas import Envelope, MxHost, TlsPolicy
from schemas.events import TlsInfo
from senders.smtpclient import Message, ReplyError, SmtpClient, SmtpError, message
from senders.tls import StartTls, TlsRefused, satisfies

__all__ = ["Ahead", "ConnectFailed", "Connection", "Outcome", "SmtpTransport", "Transport"]


@dataclass(frozen=True)
class Outcome:
    reply: Reply
    accepted: bool
    mx: str | None = None
    stage: str = "data"
    connection_lost: bool = False
    tls: TlsInfo | None = None
    # False: nothing of the message was answered, the connection ended first (its commands
    # may have gone behind the previous message's dot, kmta.policy.flight "unsent"): no
    # attempt, it goes back to its lane as it was
    attempted: bool = True


class ConnectFailed(Exception):
    """No MX could be connected; ``outcome`` says why (carried to every waiting message)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reply.line())
        self.outcome = outcome


class Ahead(Protocol):
    """The lane's next message, offered to a connection that could write its commands behind
    the current message's end of data (RFC 2920; ``kmta.policy.flight.rides``)."""

    def peek(self) -> Envelope | None:
        """The next message if it may be sent now (released by pacing, within the limits),
        else None; it stays in the lane."""

    def take(self) -> None:
        """The peeked message goes now: off the lane, its send slot taken. The next
        ``deliver`` call of the connection must be for it."""

    def still_open(self) -> bool:
        """Whether a message whose commands were written ahead may have its body sent: no
        lock or pause of its lane or source IP came since (e.g. with the reply before it)."""


class Connection(Protocol):
    mx: str
    delivered: int

    @property
    def usable(self) -> bool: ...

    async def deliver(self, env: Envelope, timeout: float,
                      ahead: Ahead | None = None) -> Outcome: ...

    async def close(self) -> None: ...


class Transport(Protocol):
    async def connect(self, mx: Sequence[MxHost], source_ip: str | None,
                      connect_timeout: float, tls: str | None = None,
                      sts: TlsPolicy | None = None) -> Connection: ...


def _internal(code: int, enhanced: str, text: str) -> Reply:
    return Reply(code=code, enhanced_code=enhanced, text=text, internal=True)


class SmtpConnection:
    def __init__(self, client: SmtpClient, mx: str, tls: TlsInfo | None = None,
                 how: Plan | None = None) -> None:
        self._client = client
        self.mx = mx
        self.tls = tls
        self.plan = how or Plan(pipelined=False, chunking=False)
        self.delivered = 0
        self._closed = False
        # the message whose commands went behind the last one's dot, and its command lines
        self._ahead: tuple[Envelope, Message] | None = None

    @property
    def usable(self) -> bool:
        return not self._closed and self._client.is_connected

    def _lost(self, reply: Reply, stage: str) -> Outcome:
        self._closed = True
        self._client.close()
        return Outcome(reply, False, self.mx, stage, True, self.tls)

    def _message(self, env: Envelope) -> tuple[Message | None, Outcome | None]:
        """``env`` as command lines, or the outcome that stops it before anything is sent
        (MTA-STS, an option the server lacks). Raises for an address that cannot be sent."""
        if not satisfies(self.tls, self.mx, env):  # MTA-STS: on a connection of its own
            return None, Outcome(_internal(451, "4.7.5", f"MTA-STS policy of {env.domain} needs "
                                           f"a verified TLS connection to a listed MX"),
                                 False, self.mx, "tls", True, self.tls)
        data = env.data  # bytes, as the router composed them
        sender, rcpt = smtp_address(env.sender), smtp_address(env.rcpt)
        opts, refused = mail_options(needs(sender, rcpt, data), self._client.supports, self.mx)
        if refused is not None:  # nothing was sent: the connection stays usable
            return None, Outcome(refused, False, self.mx, "mail", tls=self.tls)
        return message(sender, rcpt, opts, data, env.crlf), None

    def _follow(self, ahead: Ahead) -> Callable[[], Message | None]:
        """For the client: the lane's next message to write behind this one's dot, taken off
        the lane only when it can go (else it stays there, for a ``deliver`` of its own)."""
        def follow() -> Message | None:
            env = ahead.peek()
            if env is None or not self.usable:
                return None
            try:
                msg, _ = self._message(env)
            except Exception:  # noqa: BLE001 - its own deliver() reports it
                return None
            if msg is None:
                return None
            ahead.take()
            self._ahead = (env, msg)
            return msg
        return follow

    async def deliver(self, env: Envelope, timeout: float,
                      ahead: Ahead | None = None) -> Outcome:
        pre, self._ahead = self._ahead, None
        follow = self._follow(ahead) if ahead is not None else None
        try:
            if pre is not None and pre[0] is env:  # its commands are out: read their replies
                msg: Message | None = pre[1]
            elif not self.usable:
                return self._unsent()
            else:
                msg, stop = self._message(env)
                if stop is not None:
                    if stop.connection_lost:
                        self._closed = True
                    return stop
            assert msg is not None
            # a message written ahead goes on to its body only if its lane is still open
            go = ahead.still_open if pre is not None and ahead is not None else None
            # asyncio.timeout, not wait_for: wait_for wraps the send in a task of its own (a
            # task and its event-loop steps per message)
            async with asyncio.timeout(timeout):
                s = await self._client.send(msg, self.plan, self.mx, follow, go)
        except TimeoutError:
            return self._lost(_internal(451, "4.4.2", f"timed out talking to {self.mx}"), "data")
        except (SmtpError, OSError) as e:
            return self._lost(_internal(451, "4.4.2", f"connection to {self.mx} lost: {e}"),
                              "data")
        except Exception as e:  # noqa: BLE001 - e.g. an address that cannot go on a command
            # line or cannot be encoded: this message only; the session state is unknown
            return self._lost(_internal(451, "4.3.0", f"not sent: {type(e).__name__}: {e}"),
                              "mail")
        if s.state == "unsent":
            return self._unsent()
        assert s.reply is not None
        if s.state == "accepted":
            self.delivered += 1
            return Outcome(s.reply, True, self.mx, tls=self.tls)
        lost = s.lost or not self._client.is_connected
        if lost:
            self._closed = True
        return Outcome(s.reply, False, self.mx, s.stage, lost, self.tls)

    def _unsent(self) -> Outcome:
        self._closed = True
        self._client.close()
        return Outcome(_internal(451, "4.4.2", f"connection to {self.mx} ended before the "
                                 f"message"), False, self.mx, "mail", True, self.tls,
                       attempted=False)

    async def close(self) -> None:
        self._closed = True
        try:
            await asyncio.wait_for(self._client.quit(), 5)
        except (TimeoutError, SmtpError, OSError):
            self._client.close()


class SmtpTransport:
    """Connects to the first reachable MX address inside the allowed networks (EHLO, then
    STARTTLS as the TLS policy says). ``pipelining``: use PIPELINING and CHUNKING where the
    server offers them (``[delivery] pipelining``; False: lock-step, one command a round trip)."""

    def __init__(self, port: int, helo_name: str, allowed_networks: Sequence[str],
                 tls: str = "opportunistic", ca_file: str | None = None,
                 allow_special: Sequence[str] = (), pipelining: bool = True) -> None:
        self._port = port
        self._helo = helo_name
        self._nets = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
        self._special = [ipaddress.ip_network(n, strict=False) for n in allow_special]
        self._tls_default = tls
        self._tls = StartTls(ca_file)
        self._pipelining = pipelining

    async def _plain(self, ip: str, source_ip: str | None, timeout: float) -> SmtpClient:
        """Connected, greeted and after EHLO."""
        client = await SmtpClient.connect(ip, self._port, helo=self._helo,
                                          source_address=source_ip, timeout=timeout)
        try:
            await client.ehlo()
        except BaseException:
            client.close()
            raise
        return client

    async def _open(self, ip: str, host: str, source_ip: str | None, timeout: float,
                    req: TlsRequirement) -> SmtpConnection:
        client = await self._plain(ip, source_ip, timeout)
        try:
            client, info = await self._tls.start(
                client, host, req, lambda: self._plain(ip, source_ip, timeout))
        except BaseException:
            client.close()
            raise
        return SmtpConnection(client, host, info, plan(client.supports, self._pipelining))

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
                t0 = time.monotonic()
                try:
                    return await self._open(ip, host.host, source_ip, connect_timeout, req)
                except TlsRefused as e:
                    last = Outcome(e.reply, False, host.host, "connect", True)
                except ReplyError as e:
                    last = Outcome(Reply.parse(e.code, e.text), False, host.host, "connect",
                                   True)
                    if 500 <= e.code < 600:
                        break
                except TimeoutError:
                    last = Outcome(_internal(451, "4.4.1", f"connection to {host.host}[{ip}] "
                                             f"timed out after {time.monotonic() - t0:.0f}s"),
                                   False, host.host, "connect", True)
                except (SmtpError, OSError) as e:
                    last = Outcome(_internal(451, "4.4.1",
                                             f"cannot connect to {host.host}[{ip}]: {e}"),
                                   False, host.host, "connect", True)
                except Exception as e:  # noqa: BLE001 - any other error, as above
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
