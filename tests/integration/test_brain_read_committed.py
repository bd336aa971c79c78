"""The brain applies only committed results: an outcome in an aborted results transaction (a
sender fenced or crashed; the outcome is written again at another offset) never reaches it."""
from __future__ import annotations

import time
import uuid

from aiokafka.partitioner import murmur2

from kmta.pipeline.kafkaio import make_producer
from kmta.pipeline.outputs import event_out
from schemas.events import DeliveryEvent, Status
from tests.harness import FAST_RULES, run, wait_for

LOCK_REPLY = "rejected for policy reasons"


def partition(key: str, partitions: int) -> int:
    """The results partition of ``key`` (the producer's default partitioner: murmur2)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def second_isp(first: str, partitions: int) -> str:
    """An ISP name whose results records share ``first``'s partition: the brain reads that
    partition in order, so once it applied the second ISP's lock it has read past the first's
    offset."""
    return next(name for i in range(1000)
                if partition(name := f"rcisp-b{i}", partitions) == partition(first, partitions))


def rules(b: str) -> dict:
    def isp(domain: str) -> dict:
        return {"domains": [domain], "partitions": 1,
                "sending": dict(FAST_RULES["default"]["sending"]),
                "speed": dict(FAST_RULES["default"]["speed"]),
                "replies": [{"name": "rc_lock", "match": LOCK_REPLY, "action": "lock",
                             "duration": "1h", "category": "policy"}]}
    return {"default": FAST_RULES["default"],
            "isp": {"rcisp-a": isp("a-example.test"), b: isp("b-example.test")}}


def locking_reply(isp: str, domain: str) -> DeliveryEvent:
    return DeliveryEvent(id=uuid.uuid4().hex, to=f"reject@{domain}", isp=isp, domain=domain,
                         status=Status.EXPIRED, final=True, attempt=1, code=554,
                         enhanced_code="5.7.1",
                         response=f"554 5.7.1 Message {LOCK_REPLY}", source_ip="127.0.0.2",
                         pool="default", node="sender-rc", timestamp=time.time())


def locked(p, isp: str) -> bool:
    return any(s.get("isp") == isp and s.get("lock_reason") == "rc_lock"
               for s in p.read_topic("state"))


def test_an_aborted_results_transaction_is_not_applied(pipeline_factory) -> None:
    b_isp = second_isp("rcisp-a", 8)
    p = pipeline_factory(rules=rules(b_isp))
    assert p.config.kafka.partitions == 8, "second_isp was picked for 8 results partitions"

    async def write() -> None:
        prod = make_producer(p.config, transactional_id=f"{p.prefix}rc-test")
        await prod.start()
        try:
            await prod.begin_transaction()
            a = event_out(p.config, locking_reply("rcisp-a", "a-example.test"))
            await (await prod.send(a.topic, a.value, key=a.key))
            await prod.abort_transaction()
            b = event_out(p.config, locking_reply(b_isp, "b-example.test"))
            async with prod.transaction():
                await (await prod.send(b.topic, b.value, key=b.key))
        finally:
            await prod.stop()

    run(write())
    p.start_worker()
    wait_for(lambda: locked(p, b_isp), 90, "the brain's lock on the second ISP (committed)")
    # the aborted record is before the committed one in the same partition: read past already
    assert not locked(p, "rcisp-a"), "the brain applied an aborted transaction's outcome"
