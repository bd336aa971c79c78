"""Sender node heartbeats (``<prefix>nodes`` topic, compacted, key = node name)."""
from __future__ import annotations

from pydantic import Field

from schemas.base import Model


class IspLoad(Model):
    """What one node does for one ISP right now."""

    in_flight: int = 0
    backlog: int = 0
    connections: int = 0
    delivered: int = 0
    attempts: int = 0
    rate: float = Field(default=0.0, description="messages per tact allowed on this node")
    paused: bool = Field(default=False, description="a lane of this ISP (its pool) is held "
                         "back: locked, paused or every source IP blocked")


class NodeStats(Model):
    node: str
    partitions: list[int] = Field(default_factory=list)
    isps: dict[str, IspLoad] = Field(default_factory=dict)
    delivered_total: int = 0
    attempts_total: int = 0
    started_at: float
    timestamp: float
    stopping: bool = False
