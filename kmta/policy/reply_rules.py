"""Matching provider replies against an ISP's reply rules (first match wins)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kmta.policy.classify import Classifier, means_later
from kmta.policy.reply import Reply
from schemas.rules import ReplyRule

if TYPE_CHECKING:
    from kmta.policy.kb import EffectiveRule

__all__ = ["disposition", "match_reply"]


def match_reply(reply: Reply, rule: EffectiveRule) -> ReplyRule | None:
    """The first reply rule whose regex is found (case-insensitive) in ``reply.line()``.

    Replies kmta made up itself (``reply.internal``) match only rules with ``internal = true``,
    provider replies only the others: our own timeouts must not match a provider's pattern
    (KumoMTA's ``match_internal`` lesson, where suspensions otherwise extended themselves).
    """
    line = reply.line()
    for reply_rule, pattern in zip(rule.replies, rule.patterns, strict=True):
        if reply_rule.internal == reply.internal and pattern.search(line):
            return reply_rule
    return None


def disposition(reply: Reply, reply_rule: ReplyRule | None, *, later: bool | None = None) -> str:
    """What happens to the message itself: ``"delivered"``, ``"bounce"`` or ``"defer"``.

    A matched lock, throttle or defer rule makes the reply temporary even when the provider sent
    a 5xx (QQ and 163 send rate limits as 550/554); a bounce rule makes a 5xx final, never a 4xx
    or one of kmta's own replies: a provider that says "later" is believed, so a pattern written
    for a permanent text cannot bounce a message whose reply was temporary.
    ``later`` (the classifier read "try later": a rate, a quota, greylisting, RFC 5321's 552 too
    many recipients) defers a 5xx too; when not given, the matched rule's category and the
    shipped classifier decide it. Otherwise the code decides: 2xx delivered, 5xx bounce, anything
    else (4xx, internal) defer.
    """
    action = reply_rule.action if reply_rule is not None else None
    if action == "bounce" and _permanent(reply):
        return "bounce"
    if action in ("lock", "throttle", "defer"):
        return "defer"
    if later is None and reply.code is not None and reply.code >= 500 and not reply.internal:
        later = (reply_rule is not None and means_later(reply_rule.category or "")) or (
            Classifier.shipped().explain(reply).later)
    if later:
        return "defer"
    if reply.code is not None and 200 <= reply.code < 300 and not reply.internal:
        return "delivered"
    if _permanent(reply):
        return "bounce"
    return "defer"


def _permanent(reply: Reply) -> bool:
    return reply.code is not None and reply.code >= 500 and not reply.internal
