"""The delay scheduler's read-ahead: more records behind a paused head than it keeps in memory
(``AHEAD_BYTES``) come back to the queue each once, in order, at their due times, and an
undecodable record among them is dropped without stalling the partition."""
from __future__ import annotations

import time

from kmta.pipeline.deferral import park
from kmta.pipeline.kafkaio import make_producer
from schemas import Envelope, MxHost
from streams.delay import AHEAD_BYTES
from tests.harness import run, wait_for

BODY = "X-Kmta-Id: x\r\nSubject: read-ahead\r\n\r\n" + "a line of the message body\r\n" * 36


def envelope(i: int, now: float) -> Envelope:
    return Envelope(id=f"ra-{i:04d}", sender="s@kmta.test", rcpt=f"u{i}@gmail.com",
                    domain="gmail.com", isp="gmail", data=BODY, accepted_at=now - 60,
                    routed_at=now - 60, attempt=1,
                    mx=[MxHost(host="mx.gmail.com", pref=5, ips=["127.0.1.1"])],
                    mx_resolved_at=now, mx_ttl=3600.0)


def test_more_than_the_read_ahead_released_in_order_once(pipeline_factory) -> None:
    p = pipeline_factory()
    p.start_worker()
    cfg = p.config
    now = time.time()
    probe = park(cfg, envelope(-1, now), now, now)
    p.produce_raw_keyed(probe.topic.removeprefix(cfg.kafka.topic_prefix), probe.key,
                        probe.value)
    wait_for(lambda: any(e["id"] == "ra--001" for e in p.read_topic("queue")), 120,
             "the worker to release a first retry")

    # written as park() writes a 30 s retry 26-30 s ago: due one after another 2 s from now,
    # on one partition (one ISP), about twice the read-ahead
    n = 2 * AHEAD_BYTES // len(BODY) + 10
    start = time.time() + 2.0
    outs = []
    for i in range(n):
        due = start + i * 0.01
        out = park(cfg, envelope(i, due - 30), due, due - 30)
        assert out.topic == cfg.topic("delay.30s")
        outs.append((out, due - 30))

    async def write() -> None:
        prod = make_producer(cfg)
        await prod.start()
        try:
            for i, (out, ts) in enumerate(outs):
                await prod.send(out.topic, out.value, key=out.key, timestamp_ms=int(ts * 1000))
                if i == n // 3:  # not an envelope: dropped, the records behind it still move
                    await prod.send(out.topic, b"{not json", key=out.key,
                                    timestamp_ms=int(ts * 1000))
            await prod.flush()
        finally:
            await prod.stop()
    run(write())

    def released() -> list[dict] | None:
        got = [e for e in p.read_topic("queue") if e["id"].startswith("ra-0")]
        return got if len(got) >= n else None
    got = wait_for(released, 60, f"{n} retries back on the queue", interval=0.5)
    assert sorted(e["id"] for e in got) == [f"ra-{i:04d}" for i in range(n)]  # each once
    time.sleep(1.0)
    assert len([e for e in p.read_topic("queue") if e["id"].startswith("ra-0")]) == n
    # in order (the queue has two gmail partitions: order by release time)
    routed = [e["routed_at"] for e in sorted(got, key=lambda e: e["id"])]
    assert routed == sorted(routed)
    lateness = [t - (start + i * 0.01) for i, t in enumerate(routed)]
    assert min(lateness) > -0.06  # never early (the scheduler moves what is due within 50 ms)
    assert max(lateness) < 5.0, max(lateness)  # a loaded 2-CPU machine: seconds, not minutes
