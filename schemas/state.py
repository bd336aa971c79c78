"""The brain's decisions per ISP, published on the compacted ``<prefix>state`` topic.

Key: ``"<isp>"`` for the whole ISP, ``"<isp>|<source_ip>"`` for one source IP, or ``"<isp>@<pool>"``
for the source IPs of one pool; ``"*|<source_ip>"`` is an operator's warm-up mark of a source IP
(every ISP). Senders read the topic from the beginning and enforce the latest
value of each key. A source IP's record carries that IP's own speed level; the ISP's record
carries the lowest of them.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from schemas.base import Model


class WarmupStatus(Model):
    """A new source IP's warm-up at one ISP, as the brain counted it (``kmta.policy.warmup``):
    its schedule day, the caps of today and of this UTC hour, and what it sent in them."""

    day: int = Field(description="warm-up day, 1-based; past `days`: warm")
    days: int = Field(description="days in the ISP's schedule")
    daily_cap: int | None = Field(default=None, description="None: warm-up complete")
    hourly_cap: int | None = None
    sent_today: int = 0
    sent_hour: int = 0
    throttles_today: int = 0
    today: int = Field(default=0, description="the UTC day counted (epoch // 86400)")
    hour: int = Field(default=0, description="the UTC hour counted (epoch // 3600)")
    clean_days: int = 0
    step_backs: int = 0
    counted_at: float = Field(default=0.0, description="time of the latest attempt counted")


class IspState(Model):
    isp: str
    source_ip: str | None = None
    pool: str | None = Field(default=None, description="set: this record is for one pool")
    paused: bool = False
    locked_until: float | None = Field(default=None, description="epoch seconds")
    lock_reason: str | None = None
    lock_reply: str | None = None
    speed: float | None = Field(
        default=None, description="messages per tact per source IP, all sender nodes "
        "together. A source IP's record ('<isp>|<ip>'): that IP's own level (speed.per_ip); "
        "None: the IP paces at the ISP's speed. The ISP's record: the lowest of its IPs' "
        "levels (with speed.per_ip off: the level all its IPs share), the speed of an IP "
        "without a level of its own")
    speed_min: float | None = None
    speed_max: float | None = None
    throttle_until: float | None = None
    throttle_rate: float | None = None
    max_connections: int | None = Field(default=None, description="temporary cap from a reply rule")
    clear_before: float | None = Field(
        default=None, description="messages accepted at or before this end cancelled"
    )
    rules: dict[str, Any] | None = Field(default=None, description="live rule edit (partial)")
    rules_version: int = 0
    holds: dict[str, str] | None = Field(
        default=None, description="reputation holds at this ISP: 'campaign:<c>' or "
        "'domain:<d>' -> why (complaint rate over the limit); their mail waits")
    warmup_since: int | None = Field(
        default=None, description="isp '*' (key '*|<source_ip>'): an operator's warm-up mark "
        "(kmta ip warmup): the UTC day (epoch // 86400) the IP's warm-up started; None: "
        "stopped. Overrides the config's [[pools]] warmup")
    warmup: WarmupStatus | None = Field(default=None, description="source IP records: its "
                                        "warm-up at this ISP (a new IP)")
    updated_at: float = 0.0

    @property
    def key(self) -> str:
        if self.source_ip:
            return f"{self.isp}|{self.source_ip}"
        return f"{self.isp}@{self.pool}" if self.pool else self.isp

    def locked(self, now: float) -> bool:
        return self.locked_until is not None and now < self.locked_until
