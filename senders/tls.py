"""STARTTLS on an open SMTP connection, as the TLS policy says (``kmta/policy/tls.py``).

Called by the transport right after EHLO. The result is what the event records: ``TlsInfo``
(version, cipher, verified) or None for plain text. A refusal (no STARTTLS where TLS is
required, a failed handshake, a certificate that does not verify) raises ``TlsRefused`` with
a made-up 4xx reply: the message is deferred with that reason, and the transport tries the next
MX address as for any connection failure.
"""
from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable

from kmta.policy.reply import Reply
from kmta.policy.tls import TlsRequirement, mx_matches
from schemas.events import TlsInfo
from schemas.message import Envelope
from senders.smtpclient import SmtpClient, SmtpError

__all__ = ["StartTls", "TlsRefused", "satisfies"]

log = logging.getLogger("kmta.sender.tls")


class TlsRefused(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.line())
        self.reply = reply


def _refuse(text: str) -> TlsRefused:
    return TlsRefused(Reply(code=451, enhanced_code="4.7.5", text=text, internal=True))


def _why(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message}"
    return str(e) or type(e).__name__


class StartTls:
    """The client TLS contexts of one sender node (built once)."""

    def __init__(self, ca_file: str | None = None) -> None:
        self._verify = ssl.create_default_context(cafile=ca_file)  # chain + host name
        self._any = ssl.create_default_context()
        self._any.check_hostname = False
        self._any.verify_mode = ssl.CERT_NONE

    async def start(self, smtp: SmtpClient, mx_host: str, req: TlsRequirement,
                    reopen: Callable[[], Awaitable[SmtpClient]]
                    ) -> tuple[SmtpClient, TlsInfo | None]:
        """STARTTLS on ``smtp`` (connected, after EHLO); returns the connection to use (a new
        plain one after a failed opportunistic handshake) and its TLS session."""
        if not smtp.supports("starttls"):
            if req.level == "opportunistic":
                return smtp, None
            raise _refuse(f"{mx_host} does not offer STARTTLS; TLS is required "
                          f"({req.source}: {req.level})")
        verify = req.level == "verify"
        try:
            await smtp.starttls(self._verify if verify else self._any,
                                mx_host if verify else None)
            await smtp.ehlo()
        except (TimeoutError, ssl.SSLError, SmtpError, OSError) as e:
            smtp.close()
            why = _why(e.__cause__ or e) if not isinstance(e, ssl.SSLError) else _why(e)
            if req.level == "opportunistic":
                # Postfix "may": the handshake failed, so deliver in plain text instead
                log.info("TLS handshake with %s failed (%s): plain text", mx_host, why)
                return await reopen(), None
            raise _refuse(f"TLS with {mx_host} failed: {why} ({req.source}: {req.level})"
                          ) from None
        ssl_obj = smtp.ssl_object
        cipher = ssl_obj.cipher() if ssl_obj is not None else None
        return smtp, TlsInfo(version=ssl_obj.version() if ssl_obj else None,
                             cipher=cipher[0] if cipher else None, verified=verify)


def satisfies(tls: TlsInfo | None, mx_host: str, env: Envelope) -> bool:
    """Whether a connection (to ``mx_host``, with this TLS session) may carry ``env``: an
    MTA-STS enforce policy needs a verified session to a matching MX."""
    pol = env.tls_policy
    if pol is None or pol.mode != "enforce":
        return True
    return tls is not None and tls.verified and mx_matches(mx_host, pol.mx)
