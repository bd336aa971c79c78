"""Bounce classification: ordered, first-match-wins rules from ``data/bounces.toml``.

Modelled on KumoMTA's bounce classifier (``crates/bounce-classify``, ``assets/bounce_classifier/
iana.toml``): rules are data, tried in file order. A rule matches the reply's wording (``match``),
its enhanced status code (``enhanced``, RFC 3463 semantics such as ``"x.1.1"``), its basic code
(``codes``) or a combination; a final fallback goes by the code class.

Besides the category, a classification says whether the reply means "later" (a rate, a quota,
greylisting, an explicit "try again later"), which defers the message even when the provider sent
a 5xx, as RFC 5321 4.5.3.1.10 asks for its 552 "too many recipients".

The enhanced status code is a prior (RFC 3463: its subject and detail say what the reply is
about): wording rules marked ``weak`` (generic words such as "busy", "limit exceeded", "denied",
"spam") give way to the meaning of a specific enhanced code, and no wording may suppress a
recipient against an enhanced code that names the sender's side (``x.1.7`` sender syntax,
``x.7.25`` reverse DNS, ...).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from kmta.errors import ConfigError
from kmta.policy.reply import Reply

__all__ = [
    "AUTH_FAILURE",
    "BAD_DOMAIN",
    "BAD_MAILBOX",
    "BAD_SENDER",
    "CATEGORIES",
    "CONNECTION_FAILURE",
    "DELIVERED",
    "DESCRIPTIONS",
    "DNS_FAILURE",
    "GREYLIST",
    "INACTIVE_MAILBOX",
    "MAILBOX_FULL",
    "MESSAGE_TOO_LARGE",
    "OTHER_PERMANENT",
    "OTHER_TEMPORARY",
    "POLICY",
    "RATE_LIMIT",
    "RELAY_DENIED",
    "REVERSE_DNS",
    "SHIPPED_BOUNCES",
    "SPAM_BLOCK",
    "SPAM_CONTENT",
    "TIMEOUT",
    "BounceRule",
    "Classification",
    "Classifier",
    "code_digits_enhanced",
    "effective_enhanced",
    "is_recipient_problem",
    "is_throttle",
    "means_later",
    "suppresses",
]

BAD_MAILBOX = "bad_mailbox"
INACTIVE_MAILBOX = "inactive_mailbox"
BAD_DOMAIN = "bad_domain"
MAILBOX_FULL = "mailbox_full"
MESSAGE_TOO_LARGE = "message_too_large"
BAD_SENDER = "bad_sender"
AUTH_FAILURE = "auth_failure"
REVERSE_DNS = "reverse_dns"
SPAM_BLOCK = "spam_block"
SPAM_CONTENT = "spam_content"
POLICY = "policy"
RELAY_DENIED = "relay_denied"
RATE_LIMIT = "rate_limit"
GREYLIST = "greylist"
DNS_FAILURE = "dns_failure"
CONNECTION_FAILURE = "connection_failure"
TIMEOUT = "timeout"
OTHER_TEMPORARY = "other_temporary"
OTHER_PERMANENT = "other_permanent"
DELIVERED = "delivered"

#: What each category means; shown by ``kmta classify`` and the dashboard.
DESCRIPTIONS: dict[str, str] = {
    BAD_MAILBOX: "the recipient address does not exist (user unknown, no such mailbox, has moved)",
    INACTIVE_MAILBOX: "the recipient's account exists but is disabled, suspended or inactive",
    BAD_DOMAIN: "the recipient's domain or host does not exist or accepts no mail (null MX)",
    MAILBOX_FULL: "the recipient's mailbox is over its storage quota",
    MESSAGE_TOO_LARGE: "the message exceeds a size limit",
    BAD_SENDER: "our envelope sender or sending domain was rejected (syntax, unknown, no DNS)",
    AUTH_FAILURE: "SPF, DKIM, DMARC or SMTP authentication failed or is missing",
    REVERSE_DNS: "our IP's reverse DNS (PTR) or HELO name was missing or did not match",
    SPAM_BLOCK: "our IP or domain is blocked for its reputation or a block list listing",
    SPAM_CONTENT: "this message's content was judged spam, a virus or a banned attachment",
    POLICY: "refused by the receiver's local policy (not about the recipient existing)",
    RELAY_DENIED: "the receiver would not relay for this recipient",
    RATE_LIMIT: "too much, too fast: sending rate, volume, connections or recipients; retry later",
    GREYLIST: "greylisted: retry after a short delay",
    DNS_FAILURE: "a temporary DNS failure",
    CONNECTION_FAILURE: "the connection could not be made or was lost",
    TIMEOUT: "the server did not answer in time",
    OTHER_TEMPORARY: "a temporary failure on the receiver's side",
    OTHER_PERMANENT: "a permanent failure that no rule recognised",
    DELIVERED: "accepted",
}

CATEGORIES: frozenset[str] = frozenset(DESCRIPTIONS)

SHIPPED_BOUNCES = Path(__file__).resolve().parent.parent / "data" / "bounces.toml"

_THROTTLES = frozenset({RATE_LIMIT, CONNECTION_FAILURE, TIMEOUT})
# These concern one recipient or one message: they say nothing about how fast we may send.
_RECIPIENT = frozenset(
    {BAD_MAILBOX, INACTIVE_MAILBOX, BAD_DOMAIN, MAILBOX_FULL, MESSAGE_TOO_LARGE, RELAY_DENIED}
)
# A bounced message in one of these puts its recipient on the suppression list. Everything else
# is about us (sender, authentication, content, reputation), the receiver, or a state that can
# change (a full or disabled mailbox): suppressing would lose a good recipient for good.
_SUPPRESSING = frozenset({BAD_MAILBOX, BAD_DOMAIN})
_LATER = frozenset({RATE_LIMIT, GREYLIST})
# enhanced-code meanings about our side or the message: wording that reads as an unknown
# recipient does not suppress against them ("553 5.1.7 The sender address ... is not valid")
_SENDER_SIDE = frozenset(
    {BAD_SENDER, AUTH_FAILURE, REVERSE_DNS, SPAM_BLOCK, RATE_LIMIT, MESSAGE_TOO_LARGE}
)
_CODE_PATTERN = re.compile(r"^[2-5][0-9x]{2}$")
_ENHANCED_PATTERN = re.compile(r"^[245x]\.(x|[\dx]{1,3})\.(x|[\dx]{1,3})$")
_RULE_KEYS = frozenset(
    {"category", "match", "codes", "enhanced", "internal", "later", "name", "comment", "source",
     "weak"}
)
# An enhanced code quoted inside the text ("(#5.1.1)", "[#4.16.1]") when none leads it.
_INNER_ENHANCED = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")


def is_throttle(category: str, *, temporary: bool = False) -> bool:
    """Does this category say "send slower"? A spam block counts only when it is temporary
    (``temporary=True``, i.e. a 4xx): a 5xx content rejection is about the message."""
    return category in _THROTTLES or (category == SPAM_BLOCK and temporary)


def is_recipient_problem(category: str) -> bool:
    """True for categories that concern one recipient or message (bad mailbox, full, ...)."""
    return category in _RECIPIENT


def suppresses(category: str) -> bool:
    """Does a bounce of this category put the recipient on the suppression list? Only for an
    address or domain that does not exist; never for a problem on the sender's side."""
    return category in _SUPPRESSING


def means_later(category: str) -> bool:
    """Rate limits and greylisting are temporary whatever the reply code says."""
    return category in _LATER


@dataclass(frozen=True)
class Classification:
    """The category of a reply, whether it means "later", and the rule that decided."""

    category: str
    later: bool = False
    rule: str | None = None


@dataclass(frozen=True)
class BounceRule:
    """One classifier rule. ``pattern`` is searched (case-insensitive) in ``reply.line()``;
    ``codes`` like ``[550, "4xx", "55x"]`` restrict the basic code; ``enhanced`` like
    ``["x.1.1", "5.7.x"]`` restrict the enhanced code; ``internal`` chooses between kmta's own
    replies (True) and the provider's (False); ``later`` marks wording that means "try later"
    (a rule with category ``None`` only sets that flag); ``weak`` marks generic wording that
    gives way to a specific enhanced code's meaning."""

    category: str | None
    pattern: re.Pattern[str] | None
    codes: tuple[str, ...] = ()
    enhanced: tuple[str, ...] = ()
    internal: bool = False
    later: bool = False
    name: str | None = None
    weak: bool = False

    @property
    def is_prior(self) -> bool:
        """A rule that goes by the enhanced code alone (its RFC 3463 meaning), perhaps for one
        class of basic code ("4xx" x.2.1 is a receiving rate, a 5xx one a disabled mailbox)."""
        return bool(self.enhanced) and self.pattern is None

    def matches(self, reply: Reply, enhanced: str | None = None, line: str | None = None) -> bool:
        """Whether this rule applies to ``reply`` (``enhanced``: its effective enhanced code;
        ``line``: ``reply.line().lower()`` when the caller has it already)."""
        if reply.internal != self.internal:
            return False
        if self.codes:
            code = "" if reply.code is None else str(reply.code)
            if not any(_fits(code, c) for c in self.codes):
                return False
        if self.enhanced and (
                enhanced is None or not any(_enhanced_fits(enhanced, e) for e in self.enhanced)):
            return False
        if self.pattern is None:
            return True
        return self.pattern.search(wording(reply) if line is None else line) is not None


# an address quoted in a reply is the recipient's or the sender's, not the provider's wording:
# "<unknown7@greylist-example.test>" must not read as greylisting
_ADDRESS = re.compile(r"""<?[^\s<>()\[\]"',;:]+@[^\s<>()\[\]"',;:]+>?""")

# a URL that carries an address in its query ("http://www.openspf.org/why.html?sender=a@b&ip=...")
# is the provider's pointer, whose host says what the reply is about (SPF there): its "@" is
# written as "%40", as URLs may, so that the address mask does not swallow the URL with it
_URL_AT = re.compile(r"https?://\S+")


def _url_at(m: re.Match[str]) -> str:
    return m.group(0).replace("@", "%40")


# Exchange / Office 365 name a cause by an identifier of three or more capitalised words
# ("STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
# "RESOLVER.ADR.RecipientNotFound"; learn.microsoft.com, "Email non-delivery reports and SMTP
# errors in Exchange Online"): its words are read as words, whatever the wording rules' language.
# Two-word tokens ("DisabledUser", "OverQuota") are left whole, as the rules name them.
_CAMEL = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+){2,}\b")
_HUMP = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _split_camel(m: re.Match[str]) -> str:
    return _HUMP.sub(" ", m.group(0))


# a file system path in a reply (amavisd-new's "Local delivery to /var/virusmails/virus-Qx7r8aJ
# timed out") names where the receiver stores mail, not what the reply is about: "virus" in a
# quarantine directory's name is no virus found. Two segments or more, not inside a URL or a word
# ("and/or", "TCP/IP", "http://host/path" are left alone).
_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.+~-]+/)+[\w.+~-]*")


def wording(reply: Reply) -> str:
    """The reply line the rules are matched against: lowercased, addresses (not the "@" of a URL)
    and file paths masked, identifiers of three or more capitalised words split into words."""
    line = _URL_AT.sub(_url_at, reply.line())
    line = _PATH.sub("<path>", _ADDRESS.sub("<address>", line))
    return _CAMEL.sub(_split_camel, line).lower()


def _compile(pattern: str) -> re.Pattern[str]:
    """Case-insensitive by lowercasing the pattern's letters (not what follows a backslash: ``\\S``
    stays ``\\S``) and the searched line: twice as fast as ``re.IGNORECASE`` on these
    alternation-heavy patterns."""
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "\\":
            out.append(pattern[i : i + 2])
            i += 2
        else:
            out.append(pattern[i].lower())
            i += 1
    return re.compile("".join(out))


def _fits(code: str, pattern: str) -> bool:
    return len(code) == 3 and all(p in ("x", c) for p, c in zip(pattern, code, strict=False))


def _enhanced_fits(code: str, pattern: str) -> bool:
    # "x" is any part; "6xx" is any three-digit part starting with 6
    have, want = code.split("."), pattern.split(".")
    return len(have) == 3 and all(
        w == "x" or (len(w) == len(h) and all(c in ("x", d) for c, d in zip(w, h, strict=True)))
        for w, h in zip(want, have, strict=False)
    )


def effective_enhanced(reply: Reply) -> str | None:
    """The reply's enhanced status code, or one quoted in its text when none leads it."""
    if reply.enhanced_code:
        return reply.enhanced_code
    m = _INNER_ENHANCED.search(reply.text)
    return m.group(1) if m else None


# Basic codes whose digits mean what an RFC says: RFC 5321 4.2.2/4.2.3, RFC 7504 (521, 556),
# RFC 4954 6 (432, 454, 530, 534, 535, 538), the IANA registry's 525 (AUTH account disabled), and
# RFC 1985's 458. Any other 4xx/5xx is a server's own code.
_STANDARD_CODES = frozenset(
    {421, 432, 450, 451, 452, 454, 455, 458,
     500, 501, 502, 503, 504, 521, 525, 530, 534, 535, 538, 550, 551, 552, 553, 554, 555, 556}
)


def code_digits_enhanced(code: int | None) -> str | None:
    """The enhanced code that a server's own basic code spells in its digits, or None.

    Courier (``courier/submit.C``) answers with codes outside RFC 5321 whose second and third
    digits are RFC 3463's subject and detail: ``517`` for its MAIL FROM checks (x.1.7, "Domain
    does not exist: <sender>"), ``523 Message length exceeds administrative limit`` (X.2.3's own
    title), ``546 Routing loop detected`` (X.4.6's). Standard codes and subject 0 give None."""
    if code is None or code in _STANDARD_CODES or not 400 <= code < 600:
        return None
    digits = str(code)
    return None if digits[1] == "0" else f"{digits[0]}.{digits[1]}.{digits[2]}"


class Classifier:
    """Ordered bounce rules; the first match wins, then a fallback by code class."""

    def __init__(self, rules: list[BounceRule]) -> None:
        self.rules = tuple(r for r in rules if r.category is not None)
        # the enhanced code's meaning: rules that go by it alone, minus the catch-all x.7.x
        # (providers send 5.7.1 for anything from "user unknown" to "spam")
        self.priors = tuple(r for r in self.rules if r.is_prior and r.enhanced != ("x.7.x",))
        # rules without a category only say whether wording means "later" (or vetoes it)
        self.later_rules = tuple(r for r in rules if r.category is None)

    @classmethod
    def load(cls, path: Path | None = None) -> Classifier:
        """Load ``[[rule]]`` entries from ``path`` (default: the shipped ``bounces.toml``)."""
        path = path or SHIPPED_BOUNCES
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: {e}") from None
        return cls.from_dict(data, label=str(path))

    @staticmethod
    @cache
    def shipped() -> Classifier:
        """The classifier of the shipped ``bounces.toml``, loaded once (it never changes while
        running); for callers that are not handed one."""
        return Classifier.load()

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
            rule = _rule(entry, where, problems)
            if rule is not None:
                rules.append(rule)
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(rules)

    def classify(self, reply: Reply) -> str:
        """The category of ``reply``: first matching rule, else by code class."""
        return self.explain(reply).category

    def explain(self, reply: Reply) -> Classification:
        """The category of ``reply``, whether it means "later", and the deciding rule's name."""
        enhanced = effective_enhanced(reply)
        # a code spelled by the basic code's digits is a weaker prior: on its own it may only
        # name our side or the message ("517" the sender, "523" the size), never the recipient's
        # mailbox ("422 License Expired" is no full mailbox); against wording it weighs as usual
        spelled = enhanced is None and (enhanced := code_digits_enhanced(reply.code)) is not None
        line = wording(reply)
        prefix = _POSTFIX_PREFIX.search(line)
        winner = None if prefix is None else self._reason(reply, enhanced, spelled,
                                                           line[prefix.end():])
        if winner is None:
            winner = self._decide(reply, enhanced, spelled, line)
        if (prefix is not None and prefix.group(1) == "sender" and winner is not None
                and winner.category in _RECIPIENT):
            # after "Sender address rejected:" a reason about an address ("User unknown",
            # "Domain not found", "disabled") is about our sender's: no recipient is at fault
            winner = replace(winner, category=BAD_SENDER, name=f"sender_prefix:{winner.name}")
        category = winner.category if winner is not None and winner.category else _fallback(reply)
        later = means_later(category) or (winner is not None and winner.later)
        if not reply.internal:
            # the first wording rule that matches decides: a veto ("Retrying will NOT
            # succeed") listed before the "try again later" rules wins over them
            said = next((r.later for r in self.later_rules if r.matches(reply, enhanced, line)),
                        None)
            if said is not None:
                later = said
        if later and _definitely_gone(reply, category, enhanced):
            later = False
        return Classification(category, later, winner.name if winner else None)

    def _decide(self, reply: Reply, enhanced: str | None, spelled: bool,
                line: str) -> BounceRule | None:
        """The first rule that matches ``line``, weighed against the enhanced code's meaning."""
        winner = next((r for r in self.rules if r.matches(reply, enhanced, line)
                       and not (spelled and r.is_prior and r.category not in _SENDER_SIDE)), None)
        if winner is not None and enhanced is not None and not winner.is_prior:
            winner = self._weigh(winner, reply, enhanced, line)
        return winner

    def _reason(self, reply: Reply, enhanced: str | None, spelled: bool,
                reason: str) -> BounceRule | None:
        """Postfix's "Sender / Recipient address rejected: <reason>": the reason decides, the
        prefix only says whose address it is. The rule that the words after the prefix
        (``reason``) match on their own, or None when only the code's meaning, a basic-code
        rule or generic words ("denied", "blocked", weak rules that say no more than the prefix
        does) match them, and the whole line, prefix and all, decides as before."""
        rule = self._decide(reply, enhanced, spelled, reason)
        if rule is None or rule.pattern is None or rule.weak:
            return None
        return rule

    def _weigh(self, winner: BounceRule, reply: Reply, enhanced: str, line: str) -> BounceRule:
        """The wording's rule, or the enhanced code's when the wording is weak or would
        suppress a recipient against a code that names the sender's side."""
        prior = next((r for r in self.priors if r.matches(reply, enhanced, line)), None)
        if prior is None or prior.category == winner.category:
            return winner
        if prior.category in _SUPPRESSING:
            # a prior never makes a reply suppress; between the two suppressing classes it
            # chooses when weak wording already says the recipient is gone ("5.1.1 Unrouteable
            # address" is the mailbox, "5.1.2 Unrouteable address" the domain)
            weak_gone = winner.weak and winner.category in _SUPPRESSING
            return prior if weak_gone else winner
        if winner.weak or (winner.category in _SUPPRESSING and prior.category in _SENDER_SIDE):
            return prior
        return winner


# Postfix's prefix of every MAIL FROM / RCPT TO restriction (postconf(5), smtpd_*_restrictions):
# it names the stage and the address checked, the words after it the reason.
_POSTFIX_PREFIX = re.compile(r"\b(sender|recipient) address rejected:")


# RFC 3463 5.1.1 (bad destination mailbox), 5.1.2 (bad destination system), 5.1.10 (null MX)
_GONE = ("5.1.1", "5.1.2", "5.1.10")


def _definitely_gone(reply: Reply, category: str, enhanced: str | None) -> bool:
    """A permanent reply that names an address or domain that does not exist, by its words and
    its enhanced code both, bounces even if it also says "try again" (a hint for a person, as in
    "check the address and try again"): the recipient will not come into existence."""
    return (category in _SUPPRESSING and enhanced in _GONE and reply.code is not None
            and reply.code >= 500)


def _fallback(reply: Reply) -> str:
    if reply.internal:
        return CONNECTION_FAILURE
    if reply.code is not None and 200 <= reply.code < 300:
        return DELIVERED
    if reply.code is not None and reply.code >= 500:
        return OTHER_PERMANENT
    return OTHER_TEMPORARY


def _rule(entry: dict[str, Any], where: str, problems: list[str]) -> BounceRule | None:
    problems += [f"{where}.{k}: unknown key" for k in entry if k not in _RULE_KEYS]
    later = entry.get("later", False)
    if not isinstance(later, bool):
        problems.append(f"{where}.later: must be true or false")
    category = entry.get("category")
    if category is None and "later" not in entry:
        problems.append(f"{where}.category: missing (only a rule with 'later' may omit it)")
    elif category is not None and category not in CATEGORIES:
        problems.append(f"{where}.category: unknown category {category!r}")
    pattern = None
    if "match" in entry:
        try:
            pattern = _compile(str(entry["match"]))
        except re.error as e:
            problems.append(f"{where}.match: bad regex {entry['match']!r}: {e}")
            return None
    codes = tuple(str(c).lower() for c in entry.get("codes", []))
    problems += [
        f'{where}.codes: bad code {c!r} (use e.g. 550, "4xx", "55x")'
        for c in codes
        if not _CODE_PATTERN.match(c)
    ]
    enhanced = tuple(str(c).lower() for c in entry.get("enhanced", []))
    problems += [
        f'{where}.enhanced: bad enhanced code {c!r} (use e.g. "5.1.1", "x.1.1", "4.7.x")'
        for c in enhanced
        if not _ENHANCED_PATTERN.match(c)
    ]
    if pattern is None and not codes and not enhanced:
        problems.append(f"{where}.match: missing (or give codes / enhanced)")
    internal = entry.get("internal", False)
    if not isinstance(internal, bool):
        problems.append(f"{where}.internal: must be true or false")
    weak = entry.get("weak", False)
    if not isinstance(weak, bool):
        problems.append(f"{where}.weak: must be true or false")
    name = entry.get("name")
    return BounceRule(None if category is None else str(category), pattern, codes, enhanced,
                      bool(internal), bool(later), None if name is None else str(name),
                      bool(weak))
