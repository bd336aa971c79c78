"""A sender's heartbeat and its rate gauge count only the lanes that own a queue partition on
this node: a lane left over after its partitions went to another node sends nothing here, and
showing its full rate would double the ISP's speed in the panel."""

from __future__ import annotations

from aiokafka import TopicPartition

from kmta.config import Config
from kmta.pipeline.health import Health
from kmta.pipeline.metrics import SENDER_RATE, isp_label
from kmta.pipeline.rules import partition_map
from kmta.policy.kb import KnowledgeBase
from schemas import Envelope, IspState
from senders.node import SenderNode
from senders.observe import Observer
from tests.fakes import FakeTransport

KB = KnowledgeBase.load()


def node() -> SenderNode:
    config = Config.model_validate({"pools": [{"name": "default", "source_ips": ["127.0.0.2"]}]})
    n = SenderNode(config, KB, partition_map(config, KB), transport=FakeTransport(), node="n1")
    env = Envelope(id="m1", sender="s@kmta.test", rcpt="u@gmail.com", domain="gmail.com",
                   isp="gmail", data="x", pool="default", accepted_at=1.0, routed_at=1.0)
    n.lanes.for_envelope(env)
    return n


def test_a_lane_without_partitions_reports_no_rate_then_its_share_once_it_owns_one() -> None:
    n = node()
    assert n.stats().isps["gmail"].rate == 0.0
    topic = n.intake.topic
    for p in n.lanes.pmap.partitions_of("gmail")[:1]:
        n.checkpoint.adopt(TopicPartition(topic, p), None)
    n.lanes.reslot()
    lane = next(iter(n.lanes))
    assert lane.slots
    assert n.stats().isps["gmail"].rate == round(lane.messages_per_tact(), 3) > 0.0


def test_the_rate_gauge_follows_the_same_rule() -> None:
    n = node()
    Observer(n, Health("sender")).gauges()
    assert SENDER_RATE.samples()[(isp_label("gmail"),)] == 0.0
    for p in n.lanes.pmap.partitions_of("gmail")[:1]:
        n.checkpoint.adopt(TopicPartition(n.intake.topic, p), None)
    n.lanes.reslot()
    Observer(n, Health("sender")).gauges()
    assert SENDER_RATE.samples()[(isp_label("gmail"),)] == next(iter(n.lanes)).rate_per_second() > 0.0


def test_the_isp_shows_paused_when_any_of_its_lanes_is_held_back() -> None:
    config = Config.model_validate({"pools": [{"name": "a", "source_ips": ["127.0.0.2"]},
                                              {"name": "b", "source_ips": ["127.0.0.3"]}]})
    n = SenderNode(config, KB, partition_map(config, KB), transport=FakeTransport(), node="n1")
    lanes = {}
    for pool in ("a", "b"):
        env = Envelope(id=f"m-{pool}", sender="s@kmta.test", rcpt="u@gmail.com",
                       domain="gmail.com", isp="gmail", data="x", pool=pool, accepted_at=1.0,
                       routed_at=1.0)
        lanes[pool] = n.lanes.for_envelope(env)
    assert n.stats().isps["gmail"].paused is False
    # the first lane (in the order the heartbeat walks them) is the paused one: the second,
    # free, must not hide it
    first = next(iter(n.lanes))
    first.pool_state = IspState(isp="gmail", pool=first.pool, paused=True)
    assert n.stats().isps["gmail"].paused is True
    first.pool_state = None
    assert n.stats().isps["gmail"].paused is False
