"""Deferring a message: pick its next attempt time and the delay topic tier that holds it.

Message bodies wait in Kafka delay topics, never in RAM: a tier topic ``delay.<T>s`` holds
messages that must wait at least T seconds, so within one tier partition the records become due
in the order they were written and only the head of each partition is ever examined.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from kmta.config import Config
from kmta.pipeline.kafkaio import delay_topic
from kmta.pipeline.outputs import Out, event_out, internal_event
from kmta.policy.retry import next_attempt_at
from schemas import DeliveryEvent, Envelope, RetryRule, Status, envelope_codec

__all__ = ["choose_tier", "defer", "hold", "park"]


def choose_tier(tiers: Sequence[float], remaining: float) -> float:
    """The largest tier not longer than ``remaining`` (the smallest tier for short waits)."""
    ordered = sorted(tiers)
    best = ordered[0]
    for t in ordered:
        if t <= remaining:
            best = t
    return best


def park(config: Config, env: Envelope, due_at: float, now: float) -> Out:
    """Put the envelope in the delay topics until ``due_at`` (no attempt is counted)."""
    env.due_at = due_at
    tier = choose_tier(config.kafka.delay_tiers, due_at - now)
    return Out(delay_topic(config, tier), envelope_codec.encode(env), env.isp.encode())


def hold(config: Config, env: Envelope, why: str, now: float, first: bool = True,
         node: str | None = None) -> list[Out]:
    """A message a reputation hold stops (``why``): it waits ``[reputation] recheck`` seconds
    in the delay topics, no attempt counted; the ``first`` time with a ``deferred`` event
    saying why (no reply code: the brain must not read it as the provider's answer)."""
    due = now + config.reputation.recheck
    outs = [park(config, env, due, now)]
    if first:
        ev = internal_event(env, Status.DEFERRED, 451, "4.7.1", why, "reputation_hold", now,
                            node=node).model_copy(update={
                                "code": None, "enhanced_code": None, "internal": False,
                                "next_attempt_at": due})
        outs.append(event_out(config, ev))
    return outs


def defer(config: Config, rule: RetryRule, env: Envelope, event: DeliveryEvent, now: float,
          rng: random.Random) -> list[Out]:
    """After a temporary failure of attempt ``env.attempt``: a ``deferred`` event and the
    envelope in the delay topics, or a final ``expired`` event when retries are exhausted."""
    due = next_attempt_at(rule, max(env.attempt, 1), env.accepted_at, now, rng)
    if due is not None and env.expires_at is not None and due >= env.expires_at:
        due = None
    if due is None:
        final = event.model_copy(update={
            "status": Status.EXPIRED, "final": True, "category": event.category or "expired",
            "response": f"retries exhausted after {env.attempt} attempt(s); last reply: "
                        f"{event.response}"})
        return [event_out(config, final)]
    deferred = event.model_copy(update={"status": Status.DEFERRED, "final": False,
                                        "next_attempt_at": due})
    env.last_code = event.code
    env.last_response = event.response[:500]
    return [event_out(config, deferred), park(config, env, due, now)]
