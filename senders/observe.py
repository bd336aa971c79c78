"""What a sender node shows the operator's tools: its gauges (rate, connections, backlog, lag)
and its readiness (Kafka reachable, queue partitions assigned, the brain's states read)."""
from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING

from kmta.pipeline.health import Health, KafkaProbe, watch
from kmta.pipeline.lag import Lag
from kmta.pipeline.metrics import (
    SENDER_BACKLOG,
    SENDER_CONNECTIONS,
    SENDER_IN_FLIGHT,
    SENDER_RATE,
    isp_label,
)

if TYPE_CHECKING:
    from senders.node import SenderNode

__all__ = ["Observer"]


class Observer:
    def __init__(self, node: SenderNode, health: Health) -> None:
        self.node = node
        self.health = health
        self.probe: KafkaProbe | None = None
        self.lag = Lag(node.checkpoint.group, lambda: node.consumer, self._committed)

    def _committed(self, tp: object) -> int | None:
        tracker = self.node.checkpoint.trackers.get(tp)  # type: ignore[call-overload]
        return tracker.committed if tracker is not None else None

    def gauges(self) -> None:
        now = time.time()
        rate: dict[tuple[str, ...], float] = defaultdict(float)
        conns: dict[tuple[str, ...], float] = defaultdict(float)
        backlog: dict[tuple[str, ...], float] = defaultdict(float)
        for lane in self.node.lanes:
            isp = isp_label(lane.isp)
            sends = lane.slots and lane.blocked_until(now) is None  # owns a partition, not held
            rate[(isp,)] += lane.rate_per_second() if sends else 0.0
            backlog[(isp,)] += len(lane.queue)
            for ip, n in lane.conns.items():
                conns[(isp, ip or "")] += n
        SENDER_RATE.set_all(rate)
        SENDER_CONNECTIONS.set_all(conns)
        SENDER_BACKLOG.set_all(backlog)
        SENDER_IN_FLIGHT.set_all({(): float(self.node.busy())})

    async def checks(self) -> dict[str, str]:
        c = self.node.consumer
        if c is None:
            return {"kafka": "the queue consumer is not started"}
        self.probe = self.probe or KafkaProbe.of(c)
        failing = await self.probe.failing()
        if not c.assignment():
            failing["partitions"] = "no queue partitions assigned (joining the group, or " \
                "more senders than partitions)"
        if not self.node.states.ready.is_set():
            failing["state"] = "the brain's states are not read to their end yet"
        return failing

    async def run(self) -> None:
        try:
            await watch(self.health, self.checks, (self.gauges, self.lag.refresh))
        finally:
            self.lag.clear()
