"""Bounce classification: an ordered, first-match-wins list of rules from ``data/bounces.toml``.

Modelled on KumoMTA's bounce classifier (``crates/bounce-classify``, ``assets/bounce_classifier/
iana.toml``): rules are data, tried in file order, and a final fallback goes by the code class.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmta.errors import ConfigError
from kmta.policy.reply import Reply

__all__ = [
    "AUTH_FAILURE",
    "BAD_DOMAIN",
    "BAD_MAILBOX",
    "CATEGORIES",
    "CONNECTION_FAILURE",
    "DELIVERED",
    "DNS_FAILURE",
    "GREYLIST",
    "MAILBOX_FULL",
    "MESSAGE_TOO_LARGE",
    "OTHER_PERMANENT",
    "OTHER_TEMPORARY",
    "POLICY",
    "RATE_LIMIT",
    "RELAY_DENIED",
    "SHIPPED_BOUNCES",
    "SPAM_BLOCK",
    "TIMEOUT",
    "BounceRule",
    "Classifier",
    "is_recipient_problem",
    "is_throttle",
]

BAD_MAILBOX = "bad_mailbox"
BAD_DOMAIN = "bad_domain"
MAILBOX_FULL = "mailbox_full"
SPAM_BLOCK = "spam_block"
POLICY = "policy"
AUTH_FAILURE = "auth_failure"
RATE_LIMIT = "rate_limit"
GREYLIST = "greylist"
MESSAGE_TOO_LARGE = "message_too_large"
DNS_FAILURE = "dns_failure"
CONNECTION_FAILURE = "connection_failure"
TIMEOUT = "timeout"
RELAY_DENIED = "relay_denied"
OTHER_TEMPORARY = "other_temporary"
OTHER_PERMANENT = "other_permanent"
DELIVERED = "delivered"

CATEGORIES: frozenset[str] = frozenset(
    {
        BAD_MAILBOX,
        BAD_DOMAIN,
        MAILBOX_FULL,
        SPAM_BLOCK,
        POLICY,
        AUTH_FAILURE,
        RATE_LIMIT,
        GREYLIST,
        MESSAGE_TOO_LARGE,
        DNS_FAILURE,
        CONNECTION_FAILURE,
        TIMEOUT,
        RELAY_DENIED,
        OTHER_TEMPORARY,
        OTHER_PERMANENT,
        DELIVERED,
    }
)

SHIPPED_BOUNCES = Path(__file__).resolve().parent.parent / "data" / "bounces.toml"

_THROTTLES = frozenset({RATE_LIMIT, CONNECTION_FAILURE, TIMEOUT})
# These concern one recipient or one message: they say nothing about how fast we may send.
_RECIPIENT = frozenset({BAD_MAILBOX, BAD_DOMAIN, MAILBOX_FULL, MESSAGE_TOO_LARGE, RELAY_DENIED})
_CODE_PATTERN = re.compile(r"^[2-5][0-9x]{2}$")
_RULE_KEYS = frozenset({"category", "match", "codes", "internal", "comment", "source"})


def is_throttle(category: str, *, temporary: bool = False) -> bool:
    """Does this category say "send slower"? A spam block counts only when it is temporary
    (``temporary=True``, i.e. a 4xx): a 5xx content rejection is about the message."""
    return category in _THROTTLES or (category == SPAM_BLOCK and temporary)


def is_recipient_problem(category: str) -> bool:
    """True for categories that concern one recipient or message (bad mailbox, full, ...)."""
    return category in _RECIPIENT


@dataclass(frozen=True)
class BounceRule:
    """One classifier rule: ``match`` searched (case-insensitive) in ``reply.line()``;
    ``codes`` like ``[550, "4xx", "55x"]`` restrict the basic code; ``internal`` chooses
    between kmta's own replies (True) and the provider's (False)."""

    category: str
    pattern: re.Pattern[str]
    codes: tuple[str, ...] = ()
    internal: bool = False

    def matches(self, reply: Reply) -> bool:
        """Whether this rule applies to ``reply``."""
        if reply.internal != self.internal:
            return False
        if self.codes:
            code = "" if reply.code is None else str(reply.code)
            if not any(_code_fits(code, c) for c in self.codes):
                return False
        return self.pattern.search(reply.line()) is not None


def _code_fits(code: str, pattern: str) -> bool:
    return len(code) == 3 and all(p in ("x", c) for p, c in zip(pattern, code))


class Classifier:
    """Ordered bounce rules; the first match wins, then a fallback by code class."""

    def __init__(self, rules: list[BounceRule]) -> None:
        self.rules = tuple(rules)

    @classmethod
    def load(cls, path: Path | None = None) -> Classifier:
        """Load ``[[rule]]`` entries from ``path`` (default: the shipped ``bounces.toml``)."""
        path = path or SHIPPED_BOUNCES
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: {e}") from None
        return cls.from_dict(data, label=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], label: str = "bounces") -> Classifier:
        """Build from parsed TOML; raise ConfigError listing every problem with its location."""
        problems: list[str] = [f"{label}: {k}: unknown key" for k in data if k != "rule"]
        rules: list[BounceRule] = []
        entries = data.get("rule", [])
        if not isinstance(entries, list):
            problems.append(f"{label}: rule: must be an array of tables")
            entries = []
        for i, entry in enumerate(entries):
            where = f"{label}: rule[{i}]"
            if not isinstance(entry, dict):
                problems.append(f"{where}: must be a table")
                continue
            problems += [f"{where}.{k}: unknown key" for k in entry if k not in _RULE_KEYS]
            category = entry.get("category")
            if category not in CATEGORIES:
                problems.append(f"{where}.category: unknown category {category!r}")
            try:
                pattern = re.compile(str(entry.get("match", "")), re.IGNORECASE)
                if not entry.get("match"):
                    problems.append(f"{where}.match: missing")
            except re.error as e:
                problems.append(f"{where}.match: bad regex {entry.get('match')!r}: {e}")
                continue
            codes = tuple(str(c).lower() for c in entry.get("codes", []))
            problems += [
                f'{where}.codes: bad code {c!r} (use e.g. 550, "4xx", "55x")'
                for c in codes
                if not _CODE_PATTERN.match(c)
            ]
            internal = entry.get("internal", False)
            if not isinstance(internal, bool):
                problems.append(f"{where}.internal: must be true or false")
            rules.append(BounceRule(str(category), pattern, codes, bool(internal)))
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(rules)

    def classify(self, reply: Reply) -> str:
        """The category of ``reply``: first matching rule, else by code class."""
        for rule in self.rules:
            if rule.matches(reply):
                return rule.category
        if reply.internal:
            return CONNECTION_FAILURE
        if reply.code is not None and 200 <= reply.code < 300:
            return DELIVERED
        if reply.code is not None and reply.code >= 500:
            return OTHER_PERMANENT
        return OTHER_TEMPORARY
