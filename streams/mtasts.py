"""MTA-STS (RFC 8461) discovery for the router: ``_mta-sts.<domain>`` TXT, then the policy at
``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (httpx), cached for its ``max_age``.

An ``enforce`` policy is stamped on the envelope (``Envelope.tls_policy``); the sender then
connects only to MX hosts its patterns match, over TLS verified for that host name
(``kmta/policy/tls.py``, ``senders/tls.py``). ``testing`` and ``none`` change nothing.

Per domain the TXT record is looked up again after ``TXT_RECHECK`` (or when the policy's
max_age ran out); a new id fetches the policy again (§5.1). When a fetch fails, a cached policy
stays in force until its max_age ends, as §5.1 says; a domain with no record is remembered for
``[dns] negative_ttl``. The policy host is resolved through the configured resolver, and only
addresses the sender could deliver to are contacted (inside ``delivery.allowed_networks``, no
special-use range unless ``delivery.allow_special`` opens it: kmta/policy/destinations.py).
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

import httpx

from kmta.config import Config
from kmta.pipeline.resolver import Resolver
from kmta.policy.destinations import refusal
from kmta.policy.tls import StsPolicy, parse_sts_policy, sts_txt_id
from schemas.message import TlsPolicy

__all__ = ["MAX_POLICY_BYTES", "TXT_RECHECK", "MtaSts"]

log = logging.getLogger("kmta.mtasts")

TXT_RECHECK = 3600.0
MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.3 suggests a limit of this size
FETCH_TIMEOUT = 10.0


@dataclass
class _Entry:
    policy: StsPolicy | None
    policy_id: str | None
    expires_at: float  # the policy's max_age (or the negative cache) ends
    recheck_at: float  # look the TXT record up again


class MtaSts:
    def __init__(self, config: Config, resolver: Resolver) -> None:
        self._resolver = resolver
        self._port = config.delivery.mta_sts_port
        self._nets = config.delivery.networks()
        self._special = config.delivery.special_networks()
        self._neg = config.dns.negative_ttl
        self._enabled = config.delivery.mta_sts
        self._ctx = ssl.create_default_context(cafile=config.delivery.tls_ca_file)
        self._cache: dict[str, _Entry] = {}
        self._pending: dict[str, asyncio.Future[_Entry]] = {}
        self.fetches = 0

    async def enforced(self, domain: str, now: float) -> TlsPolicy | None:
        """The domain's policy when it is in ``enforce`` mode, else None."""
        if not self._enabled:
            return None
        e = self._cache.get(domain)
        if e is None or now >= e.recheck_at:
            fut = self._pending.get(domain)
            if fut is None:
                fut = self._pending[domain] = asyncio.ensure_future(
                    self._refresh(domain, e, now))
                fut.add_done_callback(lambda _f, d=domain: self._pending.pop(d, None))
            e = await asyncio.shield(fut)
        p = e.policy
        if p is None or p.mode != "enforce" or now >= e.expires_at:
            return None
        return TlsPolicy(mode="enforce", mx=list(p.mx), id=e.policy_id)

    async def _refresh(self, domain: str, old: _Entry | None, now: float) -> _Entry:
        txt = await self._resolver.txt(f"_mta-sts.{domain}")
        if txt is None:  # DNS failing: keep what we have for a while
            e = old if old is not None and now < old.expires_at else _Entry(
                None, None, now + 60, now + 60)
            e.recheck_at = now + 60
        else:
            pid = sts_txt_id(txt)
            if pid is None:
                e = _Entry(None, None, now + self._neg, now + self._neg)
                if old is not None and old.policy is not None and now < old.expires_at:
                    # §5.1: a removed record does not end a cached policy before max_age
                    e = old
                    e.recheck_at = now + min(TXT_RECHECK, self._neg)
            elif old is not None and old.policy_id == pid and now < old.expires_at:
                e = old
                e.recheck_at = now + min(TXT_RECHECK, max(old.expires_at - now, 1.0))
            else:
                e = await self._fetch(domain, pid, old, now)
        self._cache[domain] = e
        if len(self._cache) > 100_000:
            self._cache.pop(next(iter(self._cache)))
        return e

    async def _fetch(self, domain: str, pid: str, old: _Entry | None, now: float) -> _Entry:
        host = f"mta-sts.{domain}"
        self.fetches += 1
        try:
            text = await self._get(host)
            pol = parse_sts_policy(text)
        except Exception as e:  # noqa: BLE001 - remote content: any failure is "no policy"
            # (httpx, TLS, parsing, decoding): routing must not fail over it
            log.warning("MTA-STS policy of %s not usable: %s: %s", domain, type(e).__name__, e)
            if old is not None and old.policy is not None and now < old.expires_at:
                old.recheck_at = now + 300
                return old
            return _Entry(None, None, now + 300, now + 300)
        return _Entry(pol, pid, now + pol.max_age,
                      now + min(TXT_RECHECK, max(float(pol.max_age), 1.0)))

    async def _get(self, host: str) -> str:
        ips = [ip for ip in await self._resolver.addresses(host)
               if refusal(ip, self._nets, self._special) is None]
        if not ips:
            raise OSError(f"{host} has no address kmta may connect to (delivery."
                          "allowed_networks, allow_special)")
        url = f"https://{ips[0]}:{self._port}/.well-known/mta-sts.txt"
        async with httpx.AsyncClient(  # noqa: SIM117 - the request's comment sits between
                verify=self._ctx, timeout=FETCH_TIMEOUT, follow_redirects=False,
                trust_env=False) as client:
            # connect to the address we resolved; TLS and the certificate check use the name
            async with client.stream("GET", url, headers={"Host": host},
                                     extensions={"sni_hostname": host}) as r:
                if r.status_code != 200:
                    raise ValueError(f"HTTP {r.status_code} from {host}")
                ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype != "text/plain":
                    raise ValueError(f"policy content type {ctype!r} is not text/plain")
                body = b""
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_POLICY_BYTES:
                        raise ValueError("policy larger than 64 KB")
        return body.decode("utf-8")
