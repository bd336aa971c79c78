"""The knowledge base and partition map as a process loads them from its config (the worker and
the senders must agree on both)."""
from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

from kmta.config import Config
from kmta.policy.kb import KnowledgeBase
from kmta.policy.partitions import PartitionMap
from kmta.policy.warmup import DAY, Schedules, load_schedules

__all__ = ["load_kb", "load_warmup", "partition_map", "warm_ips"]


def load_kb(config: Config) -> KnowledgeBase:
    return KnowledgeBase.load(override=config.rules.override and Path(config.rules.override))


def partition_map(config: Config, kb: KnowledgeBase) -> PartitionMap:
    return PartitionMap({i: kb.partitions(i) for i in kb.isp_names()},
                        config.kafka.queue_partitions)


def load_warmup(config: Config) -> Schedules:
    """The warm-up schedules: the shipped ones, with the config's tables over them."""
    return load_schedules(config.warmup.schedules)


def warm_ips(config: Config) -> dict[str, int]:
    """The source IPs in warm-up -> the UTC day (epoch // 86400) it started."""
    return {ip: int(datetime.combine(d, time(), UTC).timestamp() // DAY)
            for pool in config.pools for ip, d in pool.warmup.items()}
