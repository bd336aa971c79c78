"""The topics kmta creates: replication and min.insync.replicas from the config."""
from __future__ import annotations

from kmta.config import Config
from kmta.pipeline.kafkaio import new_topic, topic_specs
from streams.app import changelog_spec


def config(rf: int) -> Config:
    return Config.model_validate({"kafka": {"replication_factor": rf, "topic_prefix": "x."}})


def test_every_topic_replicated_with_two_in_sync_from_rf_two_up() -> None:
    for rf, isr in ((1, "1"), (2, "2"), (3, "2")):
        c = config(rf)
        for spec in [*topic_specs(c), changelog_spec(c)]:
            t = new_topic(c, spec)
            assert t.replication_factor == rf, spec
            assert t.topic_configs["min.insync.replicas"] == isr, spec


def test_changelog_is_compacted_like_the_other_tables() -> None:
    c = config(3)
    t = new_topic(c, changelog_spec(c))
    assert t.name == "x.brain-isp-state-changelog"
    assert t.topic_configs["cleanup.policy"] == "compact"
    assert t.num_partitions == c.kafka.partitions
