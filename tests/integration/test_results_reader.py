"""``kmta results`` reads the results topic to its end while a transaction is still open on
it, and stops there: a read-committed reader is bounded by what was committed when it
started, not held by a writer (issue 14, "Readers"). Records that are no result event are
skipped.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys

from aiokafka import AIOKafkaProducer

from kmta.pipeline.kafkaio import client_options
from tests.harness import ROOT


def event(i: int, isp: str, final: bool) -> bytes:
    return json.dumps({"id": f"m{i}", "to": f"u{i}@{isp}.test", "isp": isp,
                       "status": "delivered" if final else "deferred", "final": final,
                       "attempt": 0, "timestamp": 1.0e9 + i}).encode()


# records another writer could leave on the topic: not JSON, a JSON value that is no event
# object, an empty value, a tombstone
JUNK = [b"\xff\xfe not json", b"[1, 2]", b"null", b"", None]


async def kmta_results(config_path: str, *args: str) -> tuple[int, list[dict], str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kmta.cli", "--config", config_path, "results", "--json",
        "--timeout", "60", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, [json.loads(x) for x in out.decode().splitlines()], err.decode()


def test_results_stop_at_committed_end_while_a_transaction_is_open(pipeline_factory) -> None:
    p = pipeline_factory()
    topic = p.config.topic("results")

    async def go() -> None:
        done = AIOKafkaProducer(**client_options(p.config), transactional_id=f"{p.prefix}a")
        held = AIOKafkaProducer(**client_options(p.config), transactional_id=f"{p.prefix}b")
        await done.start()
        await held.start()
        try:
            for batch in range(3):  # three transactions: each partition ends in a marker
                async with done.transaction():
                    for i in range(batch * 20, batch * 20 + 20):
                        isp = ("gmail", "yahoo")[i % 2]
                        await done.send(topic, event(i, isp, final=i % 4 < 3),
                                        key=isp.encode(), partition=i % 8)
                    for k, junk in enumerate(JUNK):  # not result events: skipped, never fatal
                        await done.send(topic, junk, key=b"junk", partition=(batch + k) % 8)
            await held.begin_transaction()
            for i in range(100, 116):  # open on every partition while the readers run
                await held.send_and_wait(topic, event(i, "gmail", True), partition=i % 8)
            rc, evs, err = await kmta_results(str(p.config_path))
            assert rc == 0, err
            assert sorted(e["id"] for e in evs) == sorted(f"m{i}" for i in range(60))
            rc, evs, err = await kmta_results(str(p.config_path), "--isp", "gmail", "--final")
            assert rc == 0, err
            assert sorted(e["id"] for e in evs) == sorted(
                f"m{i}" for i in range(60) if i % 2 == 0 and i % 4 < 3)
            await held.commit_transaction()
            rc, evs, err = await kmta_results(str(p.config_path), "--id", "m101", "--id", "m3")
            assert rc == 0, err
            assert sorted(e["id"] for e in evs) == ["m101", "m3"]
        finally:
            await held.stop()
            await done.stop()

    asyncio.run(go())


def test_results_fails_cleanly_without_kafka(tmp_path) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\n')

    async def go() -> tuple[int, list[dict], str]:
        return await kmta_results(str(cfg), "--timeout", "5")

    rc, evs, err = asyncio.run(go())
    assert rc == 1 and evs == [] and "error" in err
