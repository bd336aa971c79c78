"""What a processing step wants written: plain records, produced by the caller's edge."""
from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Out:
    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None


async def write(producer: Any, outs: Iterable[Out]) -> None:
    """Hand every record to an aiokafka producer (they batch together), then wait until the
    broker acknowledged each one."""
    futs = [await producer.send(o.topic, o.value, key=o.key, partition=o.partition)
            for o in outs]
    await asyncio.gather(*futs)
