"""Which suppression records stop a message, and which record a feedback event makes. Pure:
stdlib and schemas only.

A message to ``address`` from sending domain ``d`` in campaign ``c`` is stopped by a global
record of the address, a ``domain`` record for ``d`` (the From domain or the configured
[[domains]] entry it belongs to) or a ``campaign`` record for ``c``.
"""
from __future__ import annotations

from collections.abc import Container, Iterable

from schemas.events import Status
from schemas.suppression import Reason, Suppression, key_of

__all__ = ["REASON_OF", "is_suppressed", "keys_for", "record_for", "unsubscribe_scope"]

REASON_OF = {Status.ASYNC_BOUNCE: Reason.ASYNC_BOUNCE, Status.COMPLAINT: Reason.COMPLAINT,
             Status.UNSUBSCRIBE: Reason.UNSUBSCRIBE, Status.BOUNCED: Reason.HARD_BOUNCE}


def keys_for(address: str, domains: Iterable[str | None], campaign: str | None) -> list[str]:
    """The record keys that would suppress this message, global first."""
    a = key_of(address)  # what key_of spells, built once (this runs for every message)
    keys = [a]
    for d in domains:
        if d and (k := f"domain:{d.lower()}|{a}") not in keys:
            keys.append(k)
    if campaign:
        keys.append(f"campaign:{campaign}|{a}")
    return keys


def is_suppressed(store: Container[str], address: str, domains: Iterable[str | None],
                  campaign: str | None) -> bool:
    """Whether a record stops this message; a store with ``contains_any(keys)`` (the
    worker's on-disk index) answers all keys in one lookup."""
    keys = keys_for(address, domains, campaign)
    any_of = getattr(store, "contains_any", None)
    if any_of is not None:
        return bool(any_of(keys))
    return any(k in store for k in keys)


def record_for(status: Status, address: str, now: float, *, msg_id: str | None = None,
               category: str | None = None, detail: str = "", by: str | None = None,
               scope: str = "global", value: str | None = None) -> Suppression:
    """The record a hard bounce, complaint or unsubscribe adds. Bounces and complaints are
    global (the address is bad, or its owner calls us spam); an unsubscribe takes the
    configured scope."""
    return Suppression(address=address, scope=scope, value=value,
                       reason=REASON_OF[status], category=category, detail=detail[:300] or None,
                       id=msg_id, by=by, at=now)


def unsubscribe_scope(configured: str, campaign: str | None,
                      domain: str | None) -> tuple[str, str | None]:
    """The scope and value of an unsubscribe's record (``[unsubscribe] scope``): the message's
    campaign, its sending domain, or the address everywhere. A token that lacks the campaign
    or domain asked for (mail without a campaign, links made before tokens carried the domain)
    suppresses globally: the safe side for a request to stop mail."""
    value = {"campaign": campaign, "domain": domain}.get(configured)
    if value is None:
        return "global", None
    return configured, value.lower() if configured == "domain" else value
