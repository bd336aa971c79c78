"""MX resolution with dnspython against the configured nameservers, with a TTL-honouring cache.

Answers are cached for their TTL, NXDOMAIN / null MX / no host for ``[dns] negative_ttl``
(RFC 2308) and failed lookups (timeout, SERVFAIL) for ``[dns] failure_ttl``: a black-holed
nameserver costs one ``timeout`` per domain and period, not one per message. Concurrent
lookups of one domain share one query.

RFC 5321 §5.1: MX records sorted by preference (equal ones shuffled); no MX → the domain's own
address (implicit MX). RFC 7505: a single ``0 .`` MX means the domain accepts no mail.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from kmta.config import DnsConfig
from schemas.message import MxHost

__all__ = ["MxResult", "MxStatus", "Resolver"]


class MxStatus(str, Enum):
    OK = "ok"
    NXDOMAIN = "nxdomain"
    NULL_MX = "null_mx"
    NO_HOST = "no_host"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True)
class MxResult:
    status: MxStatus
    hosts: list[MxHost] = field(default_factory=list)
    ttl: float = 0.0
    detail: str = ""

    @property
    def permanent(self) -> bool:
        return self.status in (MxStatus.NXDOMAIN, MxStatus.NULL_MX, MxStatus.NO_HOST)


class Resolver:
    """``await resolver.mx(domain)``: the only DNS entry point of kmta."""

    def __init__(self, config: DnsConfig, rng: random.Random | None = None) -> None:
        r = dns.asyncresolver.Resolver(configure=not config.nameservers)
        if config.nameservers:
            r.nameservers = [
                dns.nameserver.Do53Nameserver(h.strip("[]"), int(p))
                for h, _, p in (ns.rpartition(":") for ns in config.nameservers)
            ]
        r.lifetime = config.timeout
        r.timeout = min(config.timeout, 2.0)
        r.cache = None
        self._r = r
        self._cfg = config
        self._cache: OrderedDict[str, tuple[float, MxResult]] = OrderedDict()
        self._asking: dict[str, asyncio.Task[MxResult]] = {}
        self._rng = rng or random.Random()
        self.lookups = 0  # MX lookups sent (not answered from the cache or a shared query)

    async def mx(self, domain: str) -> MxResult:
        hit = self._cache.get(domain)
        if hit and hit[0] > time.monotonic():
            self._cache.move_to_end(domain)
            return hit[1]
        task = self._asking.get(domain)
        if task is None:  # one query per domain at a time, however many messages wait on it;
            # its own task: a caller cancelled does not cancel it for the others
            task = self._asking[domain] = asyncio.create_task(self._ask(domain))
            task.add_done_callback(lambda t: self._done(domain, t))
        return await asyncio.shield(task)

    def _done(self, domain: str, task: asyncio.Task[MxResult]) -> None:
        self._asking.pop(domain, None)
        if not task.cancelled():
            task.exception()  # retrieved: nobody may be waiting any more

    async def _ask(self, domain: str) -> MxResult:
        asked = time.monotonic()
        self.lookups += 1
        res = await self._lookup(domain)
        if res.status is MxStatus.TEMPFAIL:
            if self._cfg.failure_ttl <= 0:
                return res
            until = time.monotonic() + self._cfg.failure_ttl  # from the failure, not the ask
        else:
            ttl = res.ttl if res.status is MxStatus.OK else self._cfg.negative_ttl
            until = asked + max(ttl, 1.0)
        self._cache[domain] = (until, res)
        if len(self._cache) > self._cfg.cache_size:
            self._cache.popitem(last=False)
        return res

    async def _lookup(self, domain: str) -> MxResult:
        try:
            ans = await self._r.resolve(domain, "MX", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return MxResult(MxStatus.NXDOMAIN, detail=f"{domain}: no such domain (NXDOMAIN)")
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.YXDOMAIN) as e:
            return MxResult(MxStatus.TEMPFAIL, detail=f"{domain}: DNS lookup failed: {e}")
        except dns.exception.DNSException as e:
            return MxResult(MxStatus.TEMPFAIL, detail=f"{domain}: DNS error: {e}")
        if ans.rrset is None:  # no MX: implicit MX = the domain itself
            hosts = await self._addresses([(0, domain)])
            if not hosts:
                return MxResult(MxStatus.NO_HOST, detail=f"{domain}: no MX and no address record")
            return MxResult(MxStatus.OK, hosts, ttl=self._cfg.negative_ttl)
        records = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in ans.rrset]
        if len(records) == 1 and records[0][1] in ("", "."):
            return MxResult(MxStatus.NULL_MX, detail=f"{domain}: domain accepts no mail (null MX)")
        records = [(p, h) for p, h in records if h not in ("", ".")]
        self._rng.shuffle(records)
        records.sort(key=lambda x: x[0])
        hosts = await self._addresses(records)
        if not hosts:
            return MxResult(MxStatus.TEMPFAIL, detail=f"{domain}: no MX host has an address")
        return MxResult(MxStatus.OK, hosts, ttl=float(ans.rrset.ttl))

    async def _addresses(self, records: list[tuple[int, str]]) -> list[MxHost]:
        hosts = []
        for pref, host in records:
            try:
                a = await self._r.resolve(host, "A", raise_on_no_answer=False)
            except dns.exception.DNSException:
                continue
            ips = [r.address for r in a.rrset] if a.rrset is not None else []
            if ips:
                hosts.append(MxHost(host=host.lower(), pref=pref, ips=ips))
        return hosts

    async def txt(self, name: str) -> list[str] | None:
        """The TXT records of ``name`` (each one's strings joined); [] when none, None when
        the lookup failed (timeout, SERVFAIL): callers tell "absent" from "unknown"."""
        try:
            ans = await self._r.resolve(name, "TXT", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException:
            return None
        if ans.rrset is None:
            return []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in ans.rrset]

    async def addresses(self, host: str) -> list[str]:
        """The A records of ``host`` ([] when none or on failure)."""
        found = await self._addresses([(0, host)])
        return found[0].ips if found else []
