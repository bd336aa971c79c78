"""The worker's suppression index notices a reset topic (real broker): deleted and made
again with fewer records, found at a restart (the offsets it applied lie past the new end)
and while it runs (offsets go back). A key only the old topic held is no longer suppressed,
a key of the new one is; a restart over an unchanged topic reads nothing again."""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from kmta.config import Config
from kmta.pipeline.kafkaio import client_options, ensure_topics
from kmta.pipeline.suppression import SuppressionView


async def write(cfg: Config, keys: list[str], partition: int = 0) -> None:
    p = AIOKafkaProducer(**client_options(cfg))
    await p.start()
    try:
        for k in keys:
            await p.send_and_wait(cfg.topic("suppression"), b'{"address": "%s"}' % k.encode(),
                                  key=k.encode(), partition=partition)
    finally:
        await p.stop()


async def recreate(cfg: Config) -> None:
    admin = AIOKafkaAdminClient(**client_options(cfg))
    await admin.start()
    try:
        await admin.delete_topics([cfg.topic("suppression")])
    finally:
        await admin.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:  # the deletion completes asynchronously on the broker
        try:
            await ensure_topics(cfg)
            return
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def started(cfg: Config) -> SuppressionView:
    view = SuppressionView(cfg, "worker")
    await view.start()
    await asyncio.wait_for(view.ready.wait(), 30)
    return view


async def until(cond, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def test_the_worker_index_rebuilds_after_a_topic_reset(kafka_bootstrap: str,
                                                       tmp_path: Path) -> None:
    cfg = Config.model_validate({
        "data_dir": str(tmp_path),
        "kafka": {"bootstrap_servers": kafka_bootstrap,
                  "topic_prefix": f"sx{uuid.uuid4().hex[:8]}."}})

    async def go() -> None:
        await ensure_topics(cfg, timeout=60)
        await write(cfg, [f"old{i}@a.test" for i in range(6)])
        await write(cfg, ["other@a.test"], partition=1)
        view = await started(cfg)
        assert "old0@a.test" in view.index and view.rebuilds == 0
        await view.stop()

        view = await started(cfg)  # a restart over the same topic: resumes, reads nothing
        assert view.rebuilds == 0 and len(view.index) == 7
        await view.stop()

        # at a restart: the topic made again with 2 records, the index had applied 6
        await recreate(cfg)
        await write(cfg, ["new0@b.test", "new1@b.test"])
        view = await started(cfg)
        try:
            assert view.rebuilds == 1
            assert "old0@a.test" not in view.index and "other@a.test" not in view.index
            assert "new0@b.test" in view.index and len(view.index) == 2

            # while it runs: made again with 1 record (the index had read 2)
            await recreate(cfg)
            await write(cfg, ["live@c.test"])
            await until(lambda: "live@c.test" in view.index, "the new topic's record")
            assert view.rebuilds == 2
            assert "new0@b.test" not in view.index and len(view.index) == 1
            assert view._task is not None and not view._task.done()
        finally:
            await view.stop()

    asyncio.run(go())
