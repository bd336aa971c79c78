"""This node's lanes (one per ISP and pool) and the brain's decisions they enforce.

A lane is created when its first message arrives, with the brain's current states for its ISP
(the whole ISP, its source IPs, its pool) and the connection slots of the ISP's partitions this
node owns; the brain's later states reach it through ``apply``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from kmta.config import Config
from kmta.pipeline.rules import load_warmup, warm_ips
from kmta.policy.kb import KnowledgeBase
from kmta.policy.partitions import PartitionMap
from kmta.policy.warmup import begin, new_ips, status
from schemas import Envelope, IspState, WarmupStatus
from schemas.control import ALL_ISPS
from senders.lane import Lane

__all__ = ["LaneKey", "Lanes"]

LaneKey = tuple[str, str | None]  # (ISP, pool)


class Lanes:
    """``states`` is the brain's state topic as a live mapping (key -> IspState); ``owned``
    says which queue partitions this node owns now."""

    def __init__(self, config: Config, kb: KnowledgeBase, pmap: PartitionMap,
                 states: Mapping[str, object], owned: Callable[[], set[int]]) -> None:
        self._c = config
        self.kb = kb
        self.pmap = pmap
        self._states = states
        self._owned = owned
        self.by_key: dict[LaneKey, Lane] = {}
        # IP warm-up: the config's new source IPs, the operators' marks (state '*|<ip>')
        self._configured = warm_ips(config)
        self._marks: dict[str, int | None] = {}
        self._new_ips = dict(self._configured)
        self._schedules = load_warmup(config)

    def __iter__(self) -> Iterator[Lane]:
        return iter(list(self.by_key.values()))

    def get(self, key: LaneKey) -> Lane | None:
        return self.by_key.get(key)

    def queued(self) -> int:
        """Messages waiting in every lane."""
        return sum(len(lane.queue) for lane in self.by_key.values())

    def for_envelope(self, env: Envelope) -> Lane:
        """The lane of ``env``'s ISP and pool, created on first use."""
        key = (env.isp, env.pool)
        lane = self.by_key.get(key)
        if lane is None:
            pool = self._c.pool(env.pool)
            ips: list[str | None] = list(pool.source_ips) if pool else [None]
            name = pool.name if pool else env.pool
            whole, ip_states, pool_st = self.states_for(env.isp, name)
            rule = self.kb.effective(env.isp, whole.rules if whole else None, name)
            lane = Lane(env.isp, env.pool, rule, ips, state=whole, ip_states=ip_states,
                        pool_name=name, pool_state=pool_st,
                        warm_start=self.warm_start(env.isp, ips))
            self.by_key[key] = lane
            self._slot(lane, self._owned())
        return lane

    def warm_start(self, isp: str, ips: list[str | None]) -> dict[str, WarmupStatus]:
        """The warm-up of the lane's new IPs before the brain published any (nothing sent)."""
        if not self._new_ips:
            return {}
        sched = self._schedules.for_isp(isp)
        now = time.time()
        return {ip: status(begin(self._new_ips[ip], now, sched), sched)
                for ip in ips if ip is not None and ip in self._new_ips}

    def states_for(self, isp: str, pool: str | None
                   ) -> tuple[IspState | None, dict[str, IspState], IspState | None]:
        """The brain's states for a lane: the whole ISP, its source IPs, the lane's pool."""
        values = self._states
        whole = values.get(isp)
        ips = {k.split("|", 1)[1]: v for k, v in values.items()
               if k.startswith(isp + "|") and isinstance(v, IspState)}
        pool_st = values.get(f"{isp}@{pool}") if pool else None
        return (whole if isinstance(whole, IspState) else None, ips,
                pool_st if isinstance(pool_st, IspState) else None)

    def _mark(self, st: IspState) -> list[tuple[Lane, bool]]:
        if not st.source_ip:
            return []
        self._marks[st.source_ip] = st.warmup_since
        self._new_ips = new_ips(self._configured, self._marks)
        touched = []
        for lane in self.by_key.values():
            if st.source_ip in lane.source_ips:
                lane.warm_start = self.warm_start(lane.isp, lane.source_ips)
                lane.changed()
                touched.append((lane, False))
        return touched

    def reslot(self) -> None:
        """The partitions this node owns changed: every lane's connection slots follow."""
        owned = self._owned()
        for lane in self.by_key.values():
            self._slot(lane, owned)

    def _slot(self, lane: Lane, owned: set[int]) -> None:
        lane.slots = {p: self.pmap.share(lane.isp, p)
                      for p in self.pmap.partitions_of(lane.isp) if p in owned}
        lane.refresh()

    def apply(self, st: IspState, now: float | None = None) -> list[tuple[Lane, bool]]:
        """Take a state from the brain into the lanes it concerns; return them, each with
        whether the state clears the lane's queue (its held messages end cancelled)."""
        now = time.time() if now is None else now
        if st.isp == ALL_ISPS:  # a warm-up mark: every lane with that source IP
            return self._mark(st)
        touched = []
        for lane in self.by_key.values():
            if lane.isp != st.isp or (st.pool and st.pool != lane.pool_name):
                continue
            lane.brain_state(st, now)
            clears = False
            if not st.source_ip and not st.pool:
                lane.rule = self.kb.effective(st.isp, st.rules, lane.pool_name)
                clears = st.clear_before is not None
            lane.refresh()
            touched.append((lane, clears))
        return touched
