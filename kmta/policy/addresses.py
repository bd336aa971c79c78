"""Recipient and sender address checks (RFC 5321 limits, no header injection)."""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from kmta.errors import InputError
from schemas.text import has_surrogate

__all__ = ["normalize_domain", "split_address"]

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_DOT_ATOM = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*$")
_QUOTED = re.compile(r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"$')
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f<>]")


def normalize_domain(domain: str) -> str:
    """Lowercase, IDNA-encode and check a domain name; raises InputError."""
    if has_surrogate(domain):
        raise InputError(f"domain {domain!r} contains a lone surrogate (not valid Unicode)")
    d = domain.rstrip(".").lower()
    if d.startswith("[") and d.endswith("]"):
        raise InputError(f"address literals are not accepted: {domain!r}")
    try:
        ascii_d = d.encode("idna").decode("ascii") if not d.isascii() else d
        # The stdlib codec is IDNA 2003, which maps some names onto other domains (ß -> ss,
        # invisible characters dropped, full-width letters folded): refuse a name that does not
        # come back as itself rather than deliver to a domain the sender did not write.
        if ascii_d != d and ascii_d.encode("ascii").decode("idna") != unicodedata.normalize(
                "NFC", d):
            raise UnicodeError("changed by the IDNA 2003 mapping")
    except UnicodeError:
        raise InputError(f"domain {domain!r} is not a valid internationalized name") from None
    labels = ascii_d.split(".")
    if len(ascii_d) > 253 or len(labels) < 2 or not all(_LABEL.match(x) for x in labels):
        raise InputError(f"invalid domain {domain!r}")
    if labels[-1].isdigit():
        raise InputError(f"invalid domain {domain!r}: top-level label is numeric")
    return ascii_d


def split_address(address: str, what: str = "address") -> tuple[str, str]:
    """``"Ann@Example.COM"`` -> ``("Ann", "example.com")``; raises InputError with the reason.

    Rejects CR/LF and other control characters (header and SMTP command injection), angle
    brackets, display names, missing or extra ``@``, over-long parts, and non-ASCII spaces,
    invisible or unassigned characters in a UTF-8 local part (RFC 6531).

    Answers are remembered for the last 1,024 addresses (an error is not: it is raised again
    each time): routing a message checks the same two addresses five times (router, compose,
    suppression), and a campaign's From address is the same for every message.
    """
    if not isinstance(address, str) or not address:
        raise InputError(f"{what} is empty")
    return _split(address, what)


@lru_cache(maxsize=1024)
def _split(address: str, what: str) -> tuple[str, str]:
    if has_surrogate(address):
        raise InputError(f"{what} {address!r} contains a lone surrogate (not valid Unicode)")
    if _FORBIDDEN.search(address):
        raise InputError(f"{what} {address!r} contains control characters or angle brackets")
    if address != address.strip() or (" " in address and not address.startswith('"')):
        raise InputError(f"{what} {address!r} contains spaces")
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise InputError(f"{what} {address!r} has no local part or domain")
    if len(local.encode()) > 64:
        raise InputError(f"{what} {address!r}: local part longer than 64 octets")
    if len(address.encode()) > 254:
        raise InputError(f"{what} {address!r} is longer than 254 octets")
    if not (_DOT_ATOM.match(local) or _QUOTED.match(local)):
        raise InputError(f"{what} {address!r}: invalid local part")
    if not local.isascii():
        # RFC 6531 allows any UTF-8 here; spaces (U+00A0...), invisible format characters,
        # controls, surrogates and unassigned code points are refused: no reader can tell such
        # an address from another one, and a lone surrogate cannot even be encoded
        bad = next((c for c in local if unicodedata.category(c)[0] in "CZ"), None)
        if bad is not None:
            raise InputError(f"{what} {address!r}: local part contains U+{ord(bad):04X} "
                             f"({unicodedata.name(bad, 'unnamed')}), not allowed in an address")
    return local, normalize_domain(domain)
