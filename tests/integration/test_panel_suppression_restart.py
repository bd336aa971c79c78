"""The panel's suppression store survives a restart (``kmta/pipeline/suppressionstore.py``):
against a real broker, a restarted panel reads only the records written while it was down (not
the whole topic again) and shows them; a topic deleted and made again rebuilds the store."""
from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from dashboard.feed import Feed
from dashboard.model import Board
from kmta.pipeline.kafkaio import client_options, ensure_topics, make_producer
from schemas.suppression import Reason, Suppression
from tests.harness import Pipeline, wait_for


def rec(address: str, reason: Reason = Reason.HARD_BOUNCE, at: float = 1.0) -> Suppression:
    return Suppression(address=address, reason=reason, at=at)


def write(p: Pipeline, changes: list[tuple[str, Suppression | None]]) -> None:
    async def go() -> None:
        prod = make_producer(p.config)
        await prod.start()
        try:
            futs = [await prod.send(p.config.topic("suppression"),
                                    r.to_json() if r is not None else None, key=k.encode())
                    for k, r in changes]
            await asyncio.gather(*futs)
        finally:
            await prod.stop()
    asyncio.run(go())


def panel(p: Pipeline, path: Path) -> tuple[Board, Feed]:
    """A panel's board and feed on the store at ``path``, read up to the topics' ends."""
    board = Board(suppression_path=str(path))
    feed = Feed(p.config, board, refresh_every=1.0)
    feed.start()
    assert feed.caught_up.wait(120), f"panel not caught up: {feed.error}"
    return board, feed


def shut(board: Board, feed: Feed) -> None:
    feed.stop()
    board.close()


def test_restart_reads_only_what_changed_and_a_reset_rebuilds(pipeline_factory,
                                                               tmp_path: Path) -> None:
    p: Pipeline = pipeline_factory()
    asyncio.run(ensure_topics(p.config))
    path = tmp_path / "panel.sqlite"
    write(p, [(f"u{i}@x.example", rec(f"u{i}@x.example", at=float(i))) for i in range(300)])

    board, feed = panel(p, path)
    store = board.suppression_store
    assert (store.rebuilt, store.applied, board.suppression_counts()["total"]) == (True, 300,
                                                                                  300)
    shut(board, feed)

    # while the panel is down: 5 new, 3 removed, 1 replaced by a complaint
    write(p, [(f"new{i}@y.example", rec(f"new{i}@y.example", Reason.UNSUBSCRIBE, 500.0 + i))
              for i in range(5)]
          + [(f"u{i}@x.example", None) for i in range(3)]
          + [("u10@x.example", rec("u10@x.example", Reason.COMPLAINT, 900.0))])

    board, feed = panel(p, path)
    store = board.suppression_store
    # only the 9 changes were read, not the 309 records of the topic
    assert (store.rebuilt, store.applied) == (False, 9)
    counts = board.suppression_counts()
    assert (counts["total"], counts["unsubscribe"], counts["complaint"],
            counts["hard_bounce"]) == (302, 5, 1, 296)
    assert board.suppression("u0@x.example") is None
    assert board.suppression("u10@x.example").reason is Reason.COMPLAINT
    assert [r["address"] for r in board.suppression_rows("@y.example", 10)] == [
        f"new{i}@y.example" for i in range(4, -1, -1)]
    # while it runs, a new record shows too
    write(p, [("live@z.example", rec("live@z.example", Reason.MANUAL, 1000.0))])
    wait_for(lambda: board.suppression("live@z.example") is not None, 60,
             "the running panel to show a new record")
    shut(board, feed)

    # the topic deleted and made again with 2 records: the stored offsets lie past its end
    async def recreate() -> None:
        admin = AIOKafkaAdminClient(**client_options(p.config))
        await admin.start()
        try:
            await admin.delete_topics([p.config.topic("suppression")])
        finally:
            await admin.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:  # the deletion completes asynchronously on the broker
            try:
                await ensure_topics(p.config)
                break
            except Exception:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.5)
    asyncio.run(recreate())
    write(p, [("a@r.example", rec("a@r.example")), ("b@r.example", rec("b@r.example"))])
    board, feed = panel(p, path)
    store = board.suppression_store
    assert (store.rebuilt, store.applied, board.suppression_counts()["total"]) == (True, 2, 2)
    assert board.suppression("u10@x.example") is None
    shut(board, feed)
