"""TLS policy for outbound SMTP and MTA-STS (RFC 8461) parsing. Pure: stdlib and schemas.

Levels, weakest first (Postfix's ``may`` / ``encrypt`` / ``verify``):

* ``opportunistic``: STARTTLS whenever the server offers it, any certificate; a failed
  handshake is retried in plain text on a new connection (as Postfix's ``may``);
* ``required``: no STARTTLS, or a failed handshake, defers the message with that reason;
* ``verify``: ``required`` plus the certificate chain and the MX host name.

The level of an ISP is its rule's ``sending.tls``, else ``[delivery] tls``; a recipient domain
with an MTA-STS policy in ``enforce`` mode raises it to ``verify`` and allows only the MX hosts
its patterns match. ``testing`` and ``none`` policies change nothing (RFC 8461 §5).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.message import TlsPolicy

__all__ = [
    "LEVELS",
    "StsPolicy",
    "TlsRequirement",
    "mx_matches",
    "parse_sts_policy",
    "requirement",
    "sts_txt_id",
]

LEVELS = ("opportunistic", "required", "verify")


@dataclass(frozen=True)
class TlsRequirement:
    level: str
    mx_patterns: tuple[str, ...] = ()  # MTA-STS enforce: only these MX hosts
    source: str = "policy"  # "policy" ([delivery]/the ISP rule) or "mta-sts"

    def allows_mx(self, host: str) -> bool:
        return not self.mx_patterns or mx_matches(host, self.mx_patterns)


def requirement(level: str | None, default: str, sts: TlsPolicy | None = None
                ) -> TlsRequirement:
    """The effective requirement of one delivery (``level`` None: the default)."""
    lv = level or default
    if sts is not None and sts.mode == "enforce":
        return TlsRequirement("verify", tuple(sts.mx), "mta-sts")
    return TlsRequirement(lv)


def mx_matches(host: str, patterns: Sequence[str]) -> bool:
    """RFC 8461 §4.1: ``mx.example.com`` literally, ``*.example.com`` one leftmost label."""
    h = host.rstrip(".").lower()
    for p in patterns:
        p = p.rstrip(".").lower()
        if p.startswith("*."):
            head, dot, rest = h.partition(".")
            if dot and head and rest == p[2:]:
                return True
        elif h == p:
            return True
    return False


_TXT_FIELD = re.compile(r"^\s*([A-Za-z0-9_]+)=([\x21-\x3a\x3c\x3e-\x7e]+)\s*$")


def sts_txt_id(records: Sequence[str]) -> str | None:
    """The policy id of the ``_mta-sts`` TXT records; None unless exactly one is an STSv1
    record with a valid id (RFC 8461 §3.1: several records mean no policy)."""
    ours = [r for r in records if r.startswith("v=STSv1")]
    if len(ours) != 1:
        return None
    fields: dict[str, str] = {}
    for part in ours[0].split(";"):
        if not part.strip():
            continue
        m = _TXT_FIELD.match(part)
        if not m:
            return None
        fields.setdefault(m.group(1), m.group(2))
    pid = fields.get("id", "")
    return pid if fields.get("v") == "STSv1" and re.fullmatch(r"[A-Za-z0-9]{1,32}", pid) \
        else None


@dataclass(frozen=True)
class StsPolicy:
    mode: str
    mx: tuple[str, ...]
    max_age: int


def parse_sts_policy(text: str) -> StsPolicy:
    """The policy file (``key: value`` lines, RFC 8461 §3.2); ValueError when malformed."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"policy line without a colon: {line[:80]!r}")
        fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise ValueError("policy version is not STSv1")
    mode = (fields.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise ValueError(f"policy mode {mode!r} is not enforce, testing or none")
    try:
        max_age = int((fields.get("max_age") or [""])[0])
    except ValueError:
        raise ValueError("policy max_age is not a number") from None
    if not 0 <= max_age <= 31557600:
        raise ValueError("policy max_age out of range (0..31557600)")
    mx = tuple(fields.get("mx", []))
    if mode != "none" and not mx:
        raise ValueError("policy has no mx line")
    return StsPolicy(mode, mx, max_age)
