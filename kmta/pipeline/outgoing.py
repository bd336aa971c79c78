"""What a sending domain adds to each message at routing: bulk-mail header fields, DKIM
signatures and the VERP envelope sender.

**Signed once, at routing** (``streams/router.py``, right after composition): the body and
header fields are fixed from there on (the envelope on the queue and delay topics carries the
final bytes, and senders send them unchanged), so one signature serves every attempt and every
sender node; senders need no keys, and a retry costs no signing CPU. A signature's ``t=`` is
the routing time; selectors retired by rotation must stay in DNS while retries may still be
under way (``[isp.*.retry] max_age``, default some days).
"""
from __future__ import annotations

from dataclasses import dataclass

from kmta.config import Config, DomainConfig
from kmta.errors import InputError
from kmta.pipeline.dkim import DkimKey, load_keys, sign
from kmta.pipeline.metrics import DKIM_SIGN_SECONDS
from kmta.policy.listheaders import LIST_HEADERS, feedback_id, unsubscribe_headers
from kmta.policy.signing import active_keys, selector_summary, signing_domain
from kmta.policy.unsubscribe import links
from kmta.policy.verp import envelope_sender
from schemas.message import OutboxMessage

__all__ = ["Outgoing", "Stamped", "UnsignedRefused"]


class UnsignedRefused(InputError):
    """The From domain has no key to sign with and ``[delivery] unsigned = "refuse"``."""


@dataclass(frozen=True)
class Stamped:
    data: bytes  # the message as it is sent: UTF-8, CRLF line ends (encoded here, once)
    mail_from: str
    selectors: tuple[str, ...]  # "selector._domainkey.domain" of each signature added


class Outgoing:
    """Built once per worker from the config; all key files are read and checked here."""

    def __init__(self, config: Config) -> None:
        self._domains: dict[str, DomainConfig] = {d.name: d for d in config.domains}
        self._keys: dict[str, list[DkimKey]] = load_keys(config.domains)
        self._platform = next((d.name for d in config.domains if d.platform), None)
        self._refuse = config.delivery.unsigned == "refuse"
        secret = config.delivery.verp_secret
        self._verp_secret = secret.get_secret_value().encode() if secret else None
        u = config.unsubscribe
        self._unsub = (u.base_url, u.secret.get_secret_value().encode()) if (
            u.base_url and u.secret) else None
        self._unsub_mailto = u.mailto
        self._unsub_local = config.inbound.unsubscribe_local

    def domain_for(self, from_domain: str) -> DomainConfig | None:
        name = signing_domain(from_domain, self._domains)
        return self._domains[name] if name else None

    def sending_domains(self, from_domain: str) -> tuple[str, ...]:
        """The From domain and the [[domains]] entry it belongs to (suppression scopes)."""
        dom = self.domain_for(from_domain)
        return (from_domain, dom.name) if dom and dom.name != from_domain else (from_domain,)

    def headers(self, msg: OutboxMessage, from_domain: str,
                msg_id: str | None = None) -> list[tuple[str, str]]:
        """List-Unsubscribe(-Post) and Feedback-ID for ``compose`` to add. Campaign mail
        without unsubscribe fields of its own gets kmta's signed one-click URL (and mailto on
        the return path) when ``[unsubscribe] base_url`` is set."""
        given = {k.lower() for k in (msg.headers or {})}
        if (msg.unsubscribe_url or msg.unsubscribe_mailto) and (
                "list-unsubscribe" in given or "list-unsubscribe-post" in given):
            raise InputError("List-Unsubscribe is both in headers and in unsubscribe_url/"
                             "unsubscribe_mailto; give it once")
        dom = self.domain_for(from_domain)
        url, mailto = msg.unsubscribe_url, msg.unsubscribe_mailto
        if (self._unsub and msg_id and msg.campaign and url is None and mailto is None
                and "list-unsubscribe" not in given
                and not _has_header(msg.data, "list-unsubscribe")):
            box = (f"{self._unsub_local}@{dom.return_path}"
                   if dom and dom.return_path and self._unsub_mailto else None)
            url, mailto = links(self._unsub[1], self._unsub[0], msg_id, msg.to, msg.campaign,
                                box, dom.name if dom else from_domain)
        out = unsubscribe_headers(url, mailto)
        sender_id = (dom.feedback_sender or dom.name) if dom else from_domain
        fb = feedback_id(msg.campaign, from_domain, msg.pool, sender_id)
        if fb and "feedback-id" not in given:
            out.append(("Feedback-ID", fb))
        if msg.data is not None and out:
            head = msg.data.replace("\r\n", "\n").split("\n\n", 1)[0]
            present = {line.split(":", 1)[0].strip().lower()
                       for line in head.split("\n") if ":" in line and line[:1] not in " \t"}
            clash = present & LIST_HEADERS & {n.lower() for n, _ in out}
            if clash:
                raise InputError(f"data already has {', '.join(sorted(clash))}")
        return out

    def stamp(self, data: str | bytes, msg_id: str, from_addr: str, from_domain: str,
              now: float) -> Stamped:
        """Sign ``data`` (text, or its UTF-8 bytes as ``compose_bytes`` makes them) with the
        From domain's keys valid at ``now`` (plus the platform's) and choose the envelope
        sender."""
        dom = self.domain_for(from_domain)
        keys = active_keys(self._keys[dom.name], now) if dom else []
        if not keys and self._refuse:
            why = (f"no key of domain {dom.name} is valid now" if dom
                   else f"From domain {from_domain} has no [[domains]] entry")
            raise UnsignedRefused(f"refusing to send unsigned mail: {why} "
                                  f"(delivery.unsigned = \"refuse\")")
        if self._platform and (dom is None or dom.name != self._platform):
            keys = keys + active_keys(self._keys[self._platform], now)
        raw = data if isinstance(data, bytes) else data.encode("utf-8")
        if keys:
            with DKIM_SIGN_SECONDS.time():
                raw = sign(raw, keys)
        mail_from = from_addr
        if dom is not None and dom.return_path and self._verp_secret is not None:
            mail_from = envelope_sender(msg_id, dom.return_path, self._verp_secret)
        return Stamped(raw, mail_from,
                       tuple(f"{k.selector}._domainkey.{k.domain}" for k in keys))

    def summary(self, now: float) -> list[dict[str, object]]:
        """Per domain: which selectors sign now and which are configured (for the panel)."""
        return [selector_summary(d.name, d.dkim, now) for d in self._domains.values()]


def _has_header(data: str | None, name: str) -> bool:
    if data is None:
        return False
    head = data.replace("\r\n", "\n").split("\n\n", 1)[0]
    return any(line.split(":", 1)[0].strip().lower() == name
               for line in head.splitlines() if ":" in line and not line[:1].isspace())
