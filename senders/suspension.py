"""A destination that cannot be reached: its delivery is suspended, its messages deferred.

After ``SUSPEND_AFTER`` failed connection attempts in a row (timeouts, refused connections, no
usable MX) a lane is suspended until its connect backoff ends, as Postfix marks a destination
dead ("delivery temporarily suspended"). The messages the lane holds, and those that arrive
for it meanwhile, are deferred at once with the failure as their reason and retried by their
rule. Before, they waited in the lane, one given up per failed connection and backoff (200
messages to a provider that accepts TCP and never answers: 16 given up a minute), each holding
its queue partition's commit point back, so every other ISP on that partition would have been
delivered again after a crash or a rebalance. After the backoff one connection probes the
destination again (Lane.wanted_workers); a success ends the suspension.
"""
from __future__ import annotations

import random
from collections.abc import Callable

from aiokafka import TopicPartition

from kmta.config import Config
from kmta.pipeline.deferral import defer
from kmta.pipeline.outputs import Out, internal_event
from kmta.policy.classify import Classifier
from schemas import Envelope, Status
from senders.lane import Lane

__all__ = ["SUSPEND_AFTER", "Suspension", "suspended"]

SUSPEND_AFTER = 3  # failed connection attempts in a row (Postfix: one failed cohort)


def suspended(lane: Lane, now: float) -> bool:
    return (lane.connect_failures >= SUSPEND_AFTER and lane.connect_reply is not None
            and now < lane.connect_backoff_until)


class Suspension:
    """Defers messages of suspended lanes through the node's ``write(tp, offset, outs)``."""

    def __init__(self, config: Config, topic: str, classifier: Classifier, rng: random.Random,
                 node: str, write: Callable[[TopicPartition, int, list[Out]], None]) -> None:
        self._c = config
        self._topic = topic
        self._classifier = classifier
        self._rng = rng
        self._node = node
        self._write = write

    def defer(self, lane: Lane, partition: int, offset: int, env: Envelope, now: float) -> None:
        """Defer one message of a suspended lane (an attempt: it counts towards its retries)."""
        reply = lane.connect_reply
        assert reply is not None
        env.attempt += 1
        ev = internal_event(env, Status.DEFERRED, reply.code or 451,
                            reply.enhanced_code or "4.4.1",
                            f"delivery suspended: {reply.text}"[:1000],
                            self._classifier.classify(reply), now, node=self._node)
        self._write(TopicPartition(self._topic, partition), offset,
                    defer(self._c, lane.rule.retry, env, ev, now, self._rng))

    def defer_held(self, lane: Lane, now: float) -> int:
        """Defer every message the lane holds; returns how many."""
        held, lane.queue = lane.queue, type(lane.queue)()
        for item in held:
            self.defer(lane, item.partition, item.offset, item.env, now)
        return len(held)
