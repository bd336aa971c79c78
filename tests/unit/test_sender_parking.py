"""A sender lane that becomes blocked for long parks the messages it holds in the delay topics
when their partition must keep moving (a shared partition, or the ISP's own while only one pool
is blocked); held, they would keep the partition's commit point back for the whole lock.
No broker: a node's outcome writes only queue up for its next transaction."""

from __future__ import annotations

import time

from aiokafka import TopicPartition

from kmta.config import Config
from kmta.pipeline.rules import partition_map
from kmta.policy.kb import KnowledgeBase
from kmta.policy.parking import PARK_HELD_AFTER
from schemas import Envelope, IspState, envelope_codec
from senders.lane import Item
from senders.node import SenderNode
from tests.fakes import FakeTransport

KB = KnowledgeBase.load()


def node_with(pools: list[dict]) -> SenderNode:
    config = Config.model_validate({"pools": pools})
    return SenderNode(config, KB, partition_map(config, KB), transport=FakeTransport(), node="n1")


def hold(node: SenderNode, isp: str, pool: str, n: int) -> list[Item]:
    """``n`` messages of ``isp`` from ``pool`` waiting in the node's lane."""
    items = []
    for i in range(n):
        env = Envelope(id=f"{isp}-{i}", sender="s@kmta.test", rcpt=f"u{i}@x.test",
                       domain="x.test", isp=isp, data="x", pool=pool, accepted_at=1.0,
                       routed_at=1.0)
        part = node.lanes.pmap.partition_for(isp, env.id)
        lane = node.lanes.for_envelope(env)
        item = Item(env, part, 100 + i)
        # read from its partition as intake reads it: the checkpoint writes an outcome only
        # for an offset it saw read since the partition was assigned
        assert not node.checkpoint.track(TopicPartition(node.intake.topic, part), item.offset)
        lane.queue.append(item)
        items.append(item)
    return items


def parked(node: SenderNode) -> list[Envelope]:
    return [envelope_codec.decode(o.value) for _, _, outs in node.checkpoint.pending for o in outs]


def test_a_locked_pool_parks_what_it_holds_and_other_pools_keep_the_partition() -> None:
    node = node_with([{"name": "warm", "source_ips": ["127.0.0.2"]},
                      {"name": "main", "source_ips": ["127.0.0.3"]}])
    now = time.time()
    hold(node, "gmail", "warm", 3)
    hold(node, "gmail", "main", 2)
    warm, main = node.lanes.by_key[("gmail", "warm")], node.lanes.by_key[("gmail", "main")]
    warm.brain_state(IspState(isp="gmail", pool="warm", locked_until=now + 3600), now)
    for lane in (warm, main):
        node.intake.park_held(lane, now)
    assert not warm.queue and len(main.queue) == 2
    envs = parked(node)
    assert sorted(e.id for e in envs) == ["gmail-0", "gmail-1", "gmail-2"]
    assert {e.due_at for e in envs} == {now + 3600}  # back when the lock ends
    assert {o.topic for _, _, outs in node.checkpoint.pending for o in outs} == {"kmta.delay.3600s"}
    assert node.checkpoint.unwritten == 3  # written with the next transaction, with their offsets


def test_a_whole_isp_lock_keeps_its_own_partitions_paused_but_frees_shared_ones() -> None:
    node = node_with([{"name": "default", "source_ips": ["127.0.0.2"]}])
    now = time.time()
    hold(node, "gmail", "default", 2)          # on gmail's own partitions
    hold(node, "example.org", "default", 2)    # an unknown ISP: on a shared partition
    for isp in ("gmail", "example.org"):
        lane = node.lanes.by_key[(isp, "default")]
        lane.brain_state(IspState(isp=isp, locked_until=now + 600), now)
        node.intake.park_held(lane, now)
    assert len(node.lanes.by_key[("gmail", "default")].queue) == 2
    assert not node.lanes.by_key[("example.org", "default")].queue
    assert sorted(e.id for e in parked(node)) == ["example.org-0", "example.org-1"]


def test_a_short_block_parks_nothing() -> None:
    node = node_with([{"name": "default", "source_ips": ["127.0.0.2"]}])
    now = time.time()
    hold(node, "example.org", "default", 2)
    lane = node.lanes.by_key[("example.org", "default")]
    lane.brain_state(IspState(isp="example.org", locked_until=now + PARK_HELD_AFTER / 2), now)
    node.intake.park_held(lane, now)
    assert len(lane.queue) == 2 and node.checkpoint.pending == []
