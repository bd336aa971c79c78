"""The pure policy core: rules, reply matching, retry, speed, locks, bounce classification and
the verdict on a reply (``judge``).

Imports only the standard library, ``schemas`` and ``kmta.errors``; time is always an argument.
"""

from __future__ import annotations

from kmta.policy.classify import (
    CATEGORIES,
    Classification,
    Classifier,
    is_recipient_problem,
    is_throttle,
    suppresses,
)
from kmta.policy.kb import EffectiveRule, KnowledgeBase, RulesError
from kmta.policy.locks import Hits, lock_until, record
from kmta.policy.reply import Reply
from kmta.policy.reply_rules import disposition, match_reply
from kmta.policy.retry import next_attempt_at, schedule
from kmta.policy.speed import Signal, SpeedState, advance, initial, observe, signal_for, trace
from kmta.policy.verdict import Verdict, explain, judge

__all__ = [
    "CATEGORIES",
    "Classification",
    "Classifier",
    "EffectiveRule",
    "Hits",
    "KnowledgeBase",
    "Reply",
    "RulesError",
    "Signal",
    "SpeedState",
    "Verdict",
    "advance",
    "disposition",
    "explain",
    "initial",
    "is_recipient_problem",
    "is_throttle",
    "judge",
    "lock_until",
    "match_reply",
    "next_attempt_at",
    "observe",
    "record",
    "schedule",
    "signal_for",
    "suppresses",
    "trace",
]
