"""What a brain worker shows the operator's tools: the brain's states as gauges (speed and its
limit, locks, pauses, from the state topic every worker tails), the lag of its three consumer
groups (route, delay, the faust agents), and its readiness: Kafka reachable, partitions
assigned, the views read to their end and the table recovered."""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from kmta.pipeline.health import Health, KafkaProbe, watch
from kmta.pipeline.lag import Lag
from kmta.pipeline.metrics import (
    IP_SPEED,
    ISP_LOCKED,
    ISP_PAUSED,
    ISP_SPEED,
    ISP_SPEED_LIMIT,
    OTHER,
    isp_label,
)
from kmta.policy.kb import KnowledgeBase
from schemas import IspState

__all__ = ["Observer", "state_gauges"]

Samples = dict[tuple[str, ...], float]


def state_gauges(states: Mapping[str, object], kb: KnowledgeBase, now: float
                 ) -> tuple[Samples, Samples, Samples, Samples, Samples]:
    """(speed, speed limit, locked, paused, source IP speed) from the brain's published states
    (key -> JSON dict). Speeds are per second per source IP, for the ISPs of the knowledge
    base; locks and pauses of other destinations add up under ``other``."""
    speed: Samples = {}
    ip_speed: Samples = {}
    limit: Samples = {}
    locked: Samples = defaultdict(float)
    paused: Samples = defaultdict(float)
    for doc in list(states.values()):
        try:
            st = IspState.model_validate(doc)
        except ValueError:
            continue
        isp = isp_label(st.isp)
        where = (isp, st.source_ip or "", st.pool or "")
        locked[where] += 1.0 if st.locked(now) else 0.0
        paused[where] += 1.0 if st.paused else 0.0
        if isp == OTHER or st.pool or st.speed is None:
            continue
        if st.source_ip:  # its own level (speed.per_ip)
            tact = kb.effective(st.isp).sending.tact
            ip_speed[(isp, st.source_ip)] = st.speed / tact
            continue
        tact = kb.effective(st.isp, st.rules).sending.tact
        speed[(isp,)] = st.speed / tact
        caps = [c for c in (st.speed_max, st.throttle_rate if st.throttle_until and
                            st.throttle_until > now else None) if c is not None]
        if caps:
            limit[(isp,)] = min(caps) / tact
    return speed, limit, dict(locked), dict(paused), ip_speed


class Observer:
    """``route``, ``delay`` and ``app`` are the worker's route loop, delay scheduler and faust
    app; ``views`` its compacted views (name -> object with a ``ready`` event)."""

    def __init__(self, health: Health, kb: KnowledgeBase, prefix: str, app: Any, route: Any,
                 delay: Any, states: Any, views: Mapping[str, Any],
                 clock: Callable[[], float] = time.time) -> None:
        self.health = health
        self._kb = kb
        self._app = app
        self._route = route
        self._delay = delay
        self._states = states
        self._views = views
        self._clock = clock
        self.probe: KafkaProbe | None = None
        self.lags = [
            Lag(f"{prefix}route", lambda: route.consumer),
            Lag(f"{prefix}delay", lambda: delay.consumer),
            Lag(app.conf.id, self._faust_consumer, self._faust_committed,
                lambda c, tps: c.highwaters(*tps)),
        ]

    def _faust_consumer(self) -> Any:
        # faust's own, once made (``app.consumer`` would make it): no public accessor
        consumer = getattr(self._app, "_consumer", None)
        return _AgentTopics(consumer, self._app.conf.id) if consumer is not None else None

    def _faust_committed(self, tp: Any) -> int | None:
        committed: Mapping[Any, int | None] = getattr(
            getattr(self._app, "_consumer", None), "_committed_offset", {})
        return committed.get(tp)

    def gauges(self) -> None:
        speed, limit, locked, paused, ip_speed = state_gauges(self._states.values, self._kb,
                                                              self._clock())
        ISP_SPEED.set_all(speed)
        IP_SPEED.set_all(ip_speed)
        ISP_SPEED_LIMIT.set_all(limit)
        ISP_LOCKED.set_all(locked)
        ISP_PAUSED.set_all(paused)

    async def lag(self) -> None:
        for lag in self.lags:
            await lag.refresh()

    async def checks(self) -> dict[str, str]:
        failing: dict[str, str] = {}
        route = self._route.consumer
        if route is None:
            failing["kafka"] = "the route loop is not started"
        else:
            self.probe = self.probe or KafkaProbe.of(route)
            failing.update(await self.probe.failing())
            if not route.assignment():
                failing["partitions"] = "no outbox partitions assigned (joining the group, " \
                    "or more workers than outbox partitions)"
        for name, view in self._views.items():
            if not view.ready.is_set():
                failing[f"state.{name}"] = f"the {name} view is not read to its end yet"
        if getattr(self._app, "in_recovery", False) or getattr(self._app, "rebalancing", False):
            failing["table"] = "the brain's table is recovering or the group is rebalancing"
        return failing

    async def run(self) -> None:
        try:
            await watch(self.health, self.checks, (self.gauges, self.lag))
        finally:
            for lag in self.lags:
                lag.clear()


class _AgentTopics:
    """faust's consumer, limited to the agents' topics (its assignment also holds the table's
    changelog, which is the table's to read, not lag)."""

    def __init__(self, consumer: Any, app_id: str) -> None:
        self._c = consumer
        self._changelog = f"{app_id}-"

    def assignment(self) -> set[Any]:
        return {tp for tp in self._c.assignment() if not tp.topic.startswith(self._changelog)}

    async def highwaters(self, *tps: Any) -> Mapping[Any, int]:
        return await self._c.highwaters(*tps)  # type: ignore[no-any-return]

    async def position(self, tp: Any) -> int | None:
        return await self._c.position(tp)  # type: ignore[no-any-return]
