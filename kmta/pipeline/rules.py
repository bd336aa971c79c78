"""The knowledge base and partition map as a process loads them from its config (the worker and
the senders must agree on both)."""
from __future__ import annotations

from pathlib import Path

from kmta.config import Config
from kmta.policy.kb import KnowledgeBase
from kmta.policy.partitions import PartitionMap

__all__ = ["load_kb", "partition_map"]


def load_kb(config: Config) -> KnowledgeBase:
    return KnowledgeBase.load(override=config.rules.override and Path(config.rules.override))


def partition_map(config: Config, kb: KnowledgeBase) -> PartitionMap:
    return PartitionMap({i: kb.partitions(i) for i in kb.isp_names()},
                        config.kafka.queue_partitions)
