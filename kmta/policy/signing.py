"""DKIM decisions (RFC 6376, RFC 8463): which domain signs, with which selectors now, over
which header fields. Pure: the signing itself (dkimpy) is in ``kmta/pipeline/dkim.py``.

* **Alignment**: a ``[[domains]]`` entry signs mail whose From domain is its name or a
  subdomain of it (DMARC relaxed alignment, RFC 7489 §3.1.1); the longest matching name wins.
* **Rotation**: a selector signs while ``not_before <= now < not_after`` (either end open).
  Publish the new selector's TXT ahead, give it a ``not_before`` and the old one the same
  ``not_after``: the switch happens at that time, in every worker, without a restart. Keep the
  old TXT published for some days after, so mail still in flight (retries) verifies.
* **Header list**: RFC 6376 §5.4.1's recommendations plus the RFC 8058 and Gmail FBL fields.
  ``From`` is oversigned (listed once more than present), so nobody can add a second From
  that a reader would show while the signature still verifies.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

__all__ = [
    "OVERSIGNED",
    "SIGNED_HEADERS",
    "KeyWindow",
    "active_keys",
    "headers_to_sign",
    "selector_summary",
    "signing_domain",
]

SIGNED_HEADERS = ("from", "to", "subject", "date", "message-id", "mime-version", "content-type",
                  "list-unsubscribe", "list-unsubscribe-post", "feedback-id", "list-id")
OVERSIGNED = frozenset({"from"})


class KeyWindow(Protocol):
    selector: str
    algorithm: str

    def window(self) -> tuple[float | None, float | None]: ...


K = TypeVar("K", bound=KeyWindow)


def signing_domain(from_domain: str, names: Iterable[str]) -> str | None:
    """The configured domain aligned with ``from_domain`` (itself or its closest parent)."""
    d = from_domain.rstrip(".").lower()
    best: str | None = None
    for name in names:
        if (d == name or d.endswith("." + name)) and (best is None or len(name) > len(best)):
            best = name
    return best


def active_keys(keys: Sequence[K], now: float) -> list[K]:
    """The keys whose validity window holds ``now`` (in configuration order)."""
    out = []
    for k in keys:
        nb, na = k.window()
        if (nb is None or nb <= now) and (na is None or now < na):
            out.append(k)
    return out


def headers_to_sign(present: Iterable[str]) -> list[str]:
    """The ``h=`` list for a message with these header field names (in order, any case):
    each listed field as often as it occurs, the oversigned ones once more."""
    counts: dict[str, int] = {}
    for name in present:
        n = name.lower()
        if n in SIGNED_HEADERS:
            counts[n] = counts.get(n, 0) + 1
    out: list[str] = []
    for n in SIGNED_HEADERS:
        out += [n] * (counts.get(n, 0) + (1 if n in OVERSIGNED else 0))
    return out


def selector_summary(domain: str, keys: Sequence[KeyWindow], now: float) -> dict[str, object]:
    """Which of a domain's selectors sign at ``now`` (the panel's table; no key files read)."""
    act = {k.selector for k in active_keys(keys, now)}
    return {"domain": domain, "signing": bool(act),
            "selectors": [{"selector": k.selector, "algorithm": k.algorithm,
                           "active": k.selector in act} for k in keys]}
