"""The ISP a feedback event (async bounce, complaint, unsubscribe) is counted under: the one the
worker routed its message to, so that complaint, bounce and unsubscribe rates per ISP (and the
brain's complaint-rate holds) see it. A member domain of the knowledge base is known without
DNS; any other recipient domain (a company's own domain on Google Workspace, Microsoft 365,
Yandex 360 ...) is placed by its MX hosts, as the router does (``kmta/policy/kb.py::isp_for``).
When the lookup fails, times out or finds no mail host, the domain is its own ISP (rule
``[default]``), as it was before: the event is written either way, held back no longer than
the lookup deadline."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from kmta.errors import InputError
from kmta.pipeline.metrics import FEEDBACK_ISP
from kmta.pipeline.resolver import MxResult, MxStatus
from kmta.policy.addresses import normalize_domain
from kmta.policy.kb import KnowledgeBase

log = logging.getLogger(__name__)

__all__ = ["FAILED", "INVALID", "MEMBER", "MX", "NO_MX", "FeedbackIsps", "MxLookup", "isp_of",
           "plan"]

# how a domain's ISP was found (the label of kmta_feedback_isp_total)
MEMBER, MX, NO_MX, FAILED, INVALID = "member", "mx", "no_mx", "failed", "invalid"


class MxLookup(Protocol):
    async def mx(self, domain: str) -> MxResult: ...


def plan(kb: KnowledgeBase, domains: Iterable[str]
         ) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """Split recipient domains into those placed without DNS, ``{domain: (isp, how)}`` (member
    domains; names no resolver should be asked about, which stay their own ISP), and those to
    look up, ``{domain: its ASCII name}``."""
    known: dict[str, tuple[str, str]] = {}
    lookup: dict[str, str] = {}
    for d in domains:
        member = kb.member_isp(d)
        if member is not None:
            known[d] = (member, MEMBER)
            continue
        try:
            lookup[d] = normalize_domain(d)
        except InputError:
            known[d] = (kb.isp_for(d, ()), INVALID)
    return known, lookup


def isp_of(kb: KnowledgeBase, domain: str, result: MxResult | None) -> tuple[str, str]:
    """(ISP, how) of a domain that is not a member domain, from its MX lookup (None: it raised
    or did not answer in time)."""
    if result is None or result.status is MxStatus.TEMPFAIL:
        return kb.isp_for(domain, ()), FAILED
    if result.status is not MxStatus.OK:
        return kb.isp_for(domain, ()), NO_MX
    return kb.isp_for(domain, [h.host for h in result.hosts]), MX


class FeedbackIsps:
    """``await isps.resolve(domains)``: each distinct domain once, the lookups side by side (at
    most ``concurrency`` at a time), all of them within ``timeout`` seconds together; the
    resolver's cache keeps the answers for their TTL across calls."""

    def __init__(self, kb: KnowledgeBase, resolver: MxLookup, timeout: float,
                 concurrency: int = 32) -> None:
        self._kb = kb
        self._resolver = resolver
        self._timeout = timeout
        self._concurrency = concurrency
        self.counts: Counter[str] = Counter()  # distinct domains per batch, by how

    async def resolve(self, domains: Iterable[str]) -> dict[str, str]:
        """``{domain: isp}`` for every domain given; never raises for a lookup."""
        known, lookup = plan(self._kb, set(domains))
        found = dict(known)
        failures: list[str] = []
        if lookup:
            sem = asyncio.Semaphore(self._concurrency)

            async def one(name: str) -> MxResult:
                async with sem:
                    return await self._resolver.mx(name)
            tasks = {d: asyncio.ensure_future(one(name)) for d, name in lookup.items()}
            done, pending = await asyncio.wait(tasks.values(), timeout=self._timeout)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for d, t in tasks.items():
                result: MxResult | None = None
                if t not in done:
                    why = f"no answer within {self._timeout:g} s"
                elif t.exception() is not None:
                    why = f"lookup raised {t.exception()!r}"
                else:
                    result = t.result()
                    why = result.detail
                found[d] = isp_of(self._kb, d, result)
                if found[d][1] == FAILED:
                    failures.append(f"{d} ({why})")
        for _, how in found.values():
            FEEDBACK_ISP.labels(how).inc()
            self.counts[how] += 1
        if failures:
            log.warning("feedback ISP: MX lookup failed for %d domain(s), counted as their own "
                        "ISP: %s", len(failures), "; ".join(sorted(failures)[:10]))
        return {d: isp for d, (isp, _) in found.items()}
