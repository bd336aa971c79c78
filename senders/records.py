"""The records a message's outcome writes: its result event, its envelope in a delay topic (a
retry or a park), or its dead letter. Built here, written by the checkpoint."""
from __future__ import annotations

import random

from kmta.config import Config
from kmta.pipeline.deferral import defer, hold, park
from kmta.pipeline.metrics import DEAD_LETTERS
from kmta.pipeline.outputs import Ending, Out, ended, event_out, internal_event
from kmta.policy.verdict import Disposition, Verdict
from schemas import DeadLetter, DeliveryEvent, Envelope, RetryRule, Status, envelope_codec
from senders.transport import Outcome

__all__ = ["Records"]


class Records:
    """Outcome records of one sender node (``node`` names it in every event)."""

    def __init__(self, config: Config, node: str, rng: random.Random | None = None) -> None:
        self._c = config
        self.node = node
        self._rng = rng or random.Random()

    def result(self, env: Envelope, outcome: Outcome, verdict: Verdict, retry: RetryRule,
               ip: str | None, pool: str | None, now: float) -> list[Out]:
        """A delivery attempt's outcome: delivered, bounced, or deferred to a delay topic."""
        reply = outcome.reply
        ev = DeliveryEvent(
            id=env.id, to=env.rcpt, isp=env.isp, domain=env.domain, status=Status.DELIVERED,
            final=True, attempt=env.attempt, code=reply.code, enhanced_code=reply.enhanced_code,
            response=reply.text[:1000], category=verdict.category, internal=reply.internal,
            mx=outcome.mx, source_ip=ip, pool=pool, node=self.node, timestamp=now,
            accepted_at=env.accepted_at, campaign=env.campaign, meta=env.meta,
            sender=env.sender, size=len(env.data), tls=outcome.tls)
        if verdict.verdict == Disposition.DELIVERED:
            return [event_out(self._c, ev)]
        if verdict.verdict == Disposition.BOUNCE:
            return [event_out(self._c, ev.model_copy(update={"status": Status.BOUNCED}))]
        return defer(self._c, retry, env, ev, now, self._rng)

    def ended(self, env: Envelope, ending: Ending, text: str, now: float) -> list[Out]:
        """Cancelled (an operator's clear) or expired before it could be sent."""
        return [ended(self._c, env, ending, text, now, node=self.node)]

    def parked(self, env: Envelope, until: float, now: float) -> list[Out]:
        """Not sendable now: back from a delay topic at ``until``, no attempt counted."""
        return [park(self._c, env, until, now)]

    def held(self, env: Envelope, why: str, now: float) -> list[Out]:
        """Stopped by a reputation hold (``why``): its deferred event, and back from a delay
        topic after ``[reputation] recheck`` seconds, no attempt counted."""
        return hold(self._c, env, why, now, node=self.node)

    def failed(self, env: Envelope, retry: RetryRule, error: BaseException, now: float,
               topic: str, partition: int, offset: int) -> list[Out]:
        """Deciding a message's outcome failed unexpectedly: a retry later, so that its
        offset never holds the partition back; if even that fails, its dead letter."""
        text = f"internal error: {type(error).__name__}: {error}"[:500]
        try:
            ev = internal_event(env, Status.DEFERRED, 451, "4.3.0", text, "internal_error",
                                now, node=self.node)
            return defer(self._c, retry, env, ev, now, self._rng)
        except Exception:  # noqa: BLE001 - not even that: the envelope to the dead-letter topic
            return [self.dead_letter(topic, partition, offset, text, envelope_codec.encode(env),
                                     now)]

    def dead_letter(self, topic: str, partition: int, offset: int, reason: str,
                    raw: bytes | None, now: float) -> Out:
        """A queue record that cannot be taken: its envelope as JSON with the body as text
        where it can (``schemas.envelope_codec.readable``), else its bytes in base64."""
        original, encoding = envelope_codec.readable(raw or b"")
        dl = DeadLetter(reason=reason[:1000], topic=topic, partition=partition, offset=offset,
                        timestamp=now, original=original, original_encoding=encoding)
        DEAD_LETTERS.labels("sender").inc()
        return Out(self._c.topic("dlq"), dl.to_json())
