"""What one reply means for its message, its recipient and the ISP: the sender's decision steps.

``judge`` is the one place that chains them: classify the reply (``bounces.toml``), match the ISP's
reply rules (``isps.toml``; a matched rule's category wins), decide bounce or defer, and whether
the recipient is suppressed. The sender, ``kmta classify``, the dashboard and ``make eval-classify``
all call it, so what an operator is shown is what the sender does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from kmta.policy.classify import (
    DELIVERED,
    DESCRIPTIONS,
    Classifier,
    means_later,
    suppresses,
)
from kmta.policy.reply import Reply
from kmta.policy.reply_rules import disposition, match_reply
from kmta.policy.speed import signal_for
from schemas.rules import ReplyRule

if TYPE_CHECKING:
    from kmta.policy.kb import EffectiveRule, KnowledgeBase

__all__ = ["Disposition", "Verdict", "explain", "judge"]


class Disposition(StrEnum):
    """What happens to the message itself (equal to its plain-string value)."""

    DELIVERED = "delivered"
    BOUNCE = "bounce"
    DEFER = "defer"


@dataclass(frozen=True)
class Verdict:
    """The decision for one reply. ``verdict`` is ``"delivered"``, ``"bounce"`` or ``"defer"``;
    ``action`` the matched ISP reply rule's action (``"lock"``, ``"throttle"``, ``"bounce"``,
    ``"defer"``, ``"ok"``) or ``"none"``; ``speed`` what the speed controller hears (``"clean"``,
    ``"throttle"``, ``"lock"``, ``"neutral"``); ``rule``/``source``/``scope`` name the ISP rule,
    ``classifier_rule`` the bounces.toml rule that chose the category."""

    category: str
    verdict: Disposition
    suppress: bool
    action: str = "none"
    speed: str = "neutral"
    later: bool = False
    rule: str | None = None
    source: str | None = None
    scope: str | None = None
    classifier_rule: str | None = None
    reply_rule: ReplyRule | None = field(default=None, compare=False, repr=False)

    @property
    def description(self) -> str:
        """What the category means, in words."""
        return DESCRIPTIONS.get(self.category, "")

    def to_dict(self) -> dict[str, object]:
        """Plain data (``kmta classify --json``, the dashboard)."""
        return {
            "category": self.category,
            "verdict": self.verdict,
            "suppress": self.suppress,
            "action": self.action,
            "speed": self.speed,
            "later": self.later,
            "rule": self.rule,
            # where the decision comes from: the ISP rule's public source, else the classifier rule
            "source": self.source
            or f"kmta/data/bounces.toml: {self.classifier_rule or 'fallback by code class'}",
            "scope": self.scope,
            "classifier_rule": self.classifier_rule,
            "description": self.description,
        }


def judge(reply: Reply, classifier: Classifier, rule: EffectiveRule | None) -> Verdict:
    """Classify ``reply``, apply the ISP's reply rules (``rule``; None: none), decide."""
    if not reply.internal and reply.code is not None and 200 <= reply.code < 300:
        return Verdict(DELIVERED, Disposition.DELIVERED, False, speed="clean",
                       classifier_rule="accepted")
    seen = classifier.explain(reply)
    matched = match_reply(reply, rule) if rule is not None else None
    category = matched.category if matched is not None and matched.category else seen.category
    later = seen.later or means_later(category)
    verdict = Disposition(disposition(reply, matched, later=later))
    if reply.internal and reply.code is not None and reply.code >= 500:
        verdict = Disposition.BOUNCE  # kmta's own permanent refusals (e.g. outside allowed nets)
    action = matched.action if matched is not None else None
    speed = signal_for(category, action, temporary=reply.temporary)
    return Verdict(
        category=category,
        verdict=verdict,
        suppress=verdict == "bounce" and suppresses(category),
        action=action or "none",
        speed=speed.value,
        later=later and verdict == "defer",
        rule=matched.name if matched is not None else None,
        source=matched.source if matched is not None else None,
        scope=matched.scope if matched is not None and action in ("lock", "throttle") else None,
        classifier_rule=seen.rule,
        reply_rule=matched,
    )


def explain(
    reply: Reply,
    classifier: Classifier,
    kb: KnowledgeBase,
    isp: str | None = None,
    domain: str | None = None,
) -> tuple[str, Verdict]:
    """Judge ``reply`` with the rules of ``isp`` (a known ISP name), else of ``domain``'s ISP
    (by its member domains; no DNS here), else ``[default]``; return that ISP's name too."""
    if isp and isp in kb.isp_names():
        name = isp
    else:
        name = kb.isp_for(domain, []) if domain else (isp or "")
    return name, judge(reply, classifier, kb.effective(name))
