"""A destination that never answers: after three failed connection attempts in a row its lane
is suspended, what it holds and what arrives for it is deferred with the failure as the reason
(not held in memory, holding its partition's commit point), and one connection probes it
after the backoff. No broker: a node's outcome writes only queue up for its next transaction."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from aiokafka import TopicPartition

from kmta.config import Config
from kmta.pipeline.rules import partition_map
from kmta.policy.kb import KnowledgeBase
from kmta.policy.reply import Reply
from schemas import Envelope, MxHost
from senders.lane import Item
from senders.node import SenderNode
from senders.suspension import SUSPEND_AFTER
from senders.transport import ConnectFailed, Outcome

KB = KnowledgeBase.load()
TIMED_OUT = Reply(code=451, enhanced_code="4.4.1",
                  text="connection to mx.dead.test[127.0.1.11] timed out after 4s", internal=True)


class DeadTransport:
    def __init__(self) -> None:
        self.attempts = 0

    async def connect(self, mx, source_ip, connect_timeout, tls=None,
                      sts=None):
        self.attempts += 1
        raise ConnectFailed(Outcome(TIMED_OUT, False, "mx.dead.test", "connect", True))


def envelope(i: int) -> Envelope:
    return Envelope(id=f"m-{i}", sender="s@kmta.test", rcpt=f"u{i}@dead.test",
                    domain="dead.test", isp="dead.test", data="x", accepted_at=time.time(),
                    routed_at=time.time(), mx=[MxHost(host="mx.dead.test", pref=10,
                                                      ips=["127.0.1.11"])])


def events(node: SenderNode) -> list[dict]:
    return [json.loads(o.value) for _, _, outs in node.checkpoint.pending for o in outs
            if o.topic == node.c.topic("results")]


async def test_a_lane_whose_destination_never_answers_defers_what_it_holds() -> None:
    config = Config.model_validate({"pools": [{"name": "default", "source_ips": ["127.0.0.2"]}]})
    transport = DeadTransport()
    node = SenderNode(config, KB, partition_map(config, KB), transport=transport, node="n1")
    part = partition_map(config, KB).partitions_of("dead.test")[0]
    lane = None
    for i in range(20):
        env = envelope(i)
        lane = node.lanes.for_envelope(env)
        lane.queue.append(Item(env, part, 100 + i))
        # read as intake reads it: the checkpoint writes outcomes of offsets it saw read
        assert not node.checkpoint.track(TopicPartition(node.intake.topic, part), 100 + i)
    assert lane is not None
    lane.latency = 10.0  # slow transactions: several connections would be wanted
    assert lane.wanted_workers() > 1
    for _ in range(SUSPEND_AFTER):
        await node.dispatch._worker(lane, "127.0.0.2")
        assert not lane.queue or lane.wanted_workers() == 1  # after a failure: one probes
    assert transport.attempts == SUSPEND_AFTER
    assert not lane.queue  # nothing held: 3 tried and deferred, 17 deferred as suspended
    evs = events(node)
    assert len(evs) == 20 and {e["status"] for e in evs} == {"deferred"}
    assert sum(e["response"].startswith("delivery suspended: connection to mx.dead.test")
               for e in evs) == 20 - SUSPEND_AFTER
    assert {e["category"] for e in evs} == {"timeout"}
    assert all(e["attempt"] == 1 for e in evs)
    delayed = [o for _, _, outs in node.checkpoint.pending for o in outs if ".delay." in o.topic]
    assert len(delayed) == 20  # each waits for its retry in the delay topics
    # a message arriving while suspended is deferred at once, never queued
    rec = SimpleNamespace(value=envelope(99).to_json(), offset=200)
    node.intake.accept(TopicPartition(node.intake.topic, part), rec)
    assert not lane.queue and len(events(node)) == 21
    assert events(node)[-1]["response"].startswith("delivery suspended")
    assert node.checkpoint.trackers[TopicPartition(node.intake.topic, part)].committable is None
