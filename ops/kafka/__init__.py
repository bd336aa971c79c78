"""A repo-managed Apache Kafka (KRaft) cluster: jars from Maven Central, no Docker."""

from __future__ import annotations

from ops.kafka.layout import NodeSpec
from ops.kafka.manager import (
    ClusterInfo,
    KafkaManagerError,
    KafkaSetupError,
    KafkaStartError,
    NodeStatus,
    ensure_jars,
    start,
    status,
    stop,
)

__all__ = [
    "ClusterInfo",
    "KafkaManagerError",
    "KafkaSetupError",
    "KafkaStartError",
    "NodeSpec",
    "NodeStatus",
    "ensure_jars",
    "start",
    "status",
    "stop",
]
