"""When the transaction coordinator fences a process's transactional producer (a sender
node's outcomes, a worker's routing): start a new one, or stop.

A broker failure longer than the transaction timeout makes the coordinator abort the open
transaction and bump the producer epoch; the producer is then fenced although nobody else took
its transactional id (measured: one of three brokers killed under load, the coordinator moved
after ~14 s, the sender got ProducerFenced and exited). The aborted transaction's outcomes are
still in the node's batch, so a new producer (same transactional id, a new epoch) writes them
again. A real takeover (a second node started with the same name) fences again at once: after
``LIMIT`` renewals within ``WINDOW`` seconds the node stops, as before.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from aiokafka.errors import (
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.producer.transaction_manager import TransactionState

log = logging.getLogger(__name__)

__all__ = ["FENCED", "TXN_TIMEOUT_MS", "Renewals", "broken", "exit_fenced", "renewed"]

# a killed process's open transaction holds read-committed readers of what it wrote this long
# (the broker aborts it then; the repo's broker checks for that every second)
TXN_TIMEOUT_MS = 10_000

# another producer with this transactional id took over: nothing more may be written
FENCED = (ProducerFenced, OutOfOrderSequenceNumber, TransactionalIdAuthorizationFailed)


class Renewals:
    LIMIT = 3
    WINDOW = 300.0

    def __init__(self) -> None:
        self._at: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """True (and counted) when one more producer renewal is allowed at ``now``."""
        while self._at and self._at[0] <= now - self.WINDOW:
            self._at.popleft()
        if len(self._at) >= self.LIMIT:
            return False
        self._at.append(now)
        return True


def broken(producer: Any) -> bool:
    """A transactional producer left unable to begin another transaction after a failure:
    its transaction manager in a fatal state (measured: the coordinator answered an EndTxn
    with an unknown error while one of three brokers was killed; every later begin then
    failed, and routing stopped for good) or in any state but ready (a commit that failed
    midway). A new producer of the same id (``renewed``) goes on; the broker aborts what the
    old one left open."""
    tm = getattr(producer, "_txn_manager", None)
    if tm is None:  # not aiokafka's (a test's fake): nothing to judge by
        return False
    return bool(tm.state is not TransactionState.READY)


async def renewed(old: Any, new_producer: Callable[[], Any], retry_after: float = 1.0,
                  give_up: Callable[[], bool] = lambda: False) -> Any:
    """Close a fenced (or ``broken``) producer and start a new one of the same transactional
    id (its start fences the old epoch and aborts what it left open), retrying while the
    cluster recovers, unless ``give_up()`` says to stop (then the error is raised). A new
    producer whose start failed is closed before the next try."""
    while True:
        try:
            if old is not None:
                await old.stop()
        except Exception:
            log.debug("closing the old producer failed", exc_info=True)
        producer = old = new_producer()
        try:
            await producer.start()
            return producer
        except Exception as e:  # the cluster is still recovering
            if give_up():
                try:
                    await producer.stop()
                except Exception:
                    log.debug("closing the new producer failed", exc_info=True)
                raise
            log.warning("starting a new producer failed (%s); retrying", e)
            await asyncio.sleep(retry_after)


def exit_fenced() -> None:
    """Another live process has this one's transactional id: nothing more may be written."""
    os._exit(3)
