"""What the classifier rounds' tests (test_classify_round4..9) assert of a reply: its category,
whether it bounces or defers, and whether the recipient is suppressed."""
from __future__ import annotations

from kmta.policy.classify import Classifier
from kmta.policy.reply import Reply
from kmta.policy.verdict import judge

__all__ = ["CLASSIFIER", "verdict"]

CLASSIFIER = Classifier.load()


def verdict(code: int, text: str) -> tuple[str, str, bool]:
    v = judge(Reply.parse(code, text), CLASSIFIER, None)
    return v.category, v.verdict, v.suppress
