"""The ISP view's reply explainer: what kmta makes of a reply, as ``kmta classify`` says it.

Judged by ``kmta.policy.verdict.judge`` with the ISP's effective rule (including an operator's live
edit), so the panel shows what the sender does with that reply.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from kmta.errors import ConfigError
from kmta.policy.classify import Classifier
from kmta.policy.reply import Reply
from kmta.policy.verdict import judge

__all__ = ["explain_text"]


@cache
def _classifier() -> Classifier:
    return Classifier.load()


def explain_text(
    text: str,
    isp: str | None,
    kb: Any,
    *,
    live: dict[str, Any] | None = None,
    internal: bool = False,
    classifier: Classifier | None = None,
) -> str:
    """A few lines explaining ``text`` (``"550 5.1.1 ..."``) under ``isp``'s rules."""
    reply = Reply.parse(None, text.strip(), internal=internal)
    try:
        rule = kb.effective(isp or "", live)
    except ConfigError:  # a live edit that no longer validates: judge with the files' rule
        rule = kb.effective(isp or "")
    v = judge(reply, classifier or _classifier(), rule)
    shown = " ".join(str(x) for x in (reply.code, reply.enhanced_code, reply.text) if x)
    lines = [
        f"reply:    {shown[:300]}",
        f"category: {v.category}: {v.description}",
        f"verdict:  {v.verdict}" + (" (the reply means: later)" if v.later else ""),
        f"suppress: {'yes, the recipient is suppressed' if v.suppress else 'no'}",
        f"action:   {v.action}" + (f" (scope {v.scope})" if v.scope else ""),
        f"speed:    {v.speed}",
        f"rule:     {v.rule or '-'}" + (f" ({v.source})" if v.source else ""),
        f"by:       bounces.toml rule {v.classifier_rule or '(fallback by code class)'}",
    ]
    return "\n".join(lines)
