"""Duplicate message ids: the same id accepted twice inside the dedup window is refused.

Pure: the caller keeps the map of ids seen (loaded from a compacted topic, see
``streams/app.py``) and passes the time in. A record read again after a crash (same outbox
partition and offset) is not a duplicate: it is routed again, as at-least-once reading requires.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

__all__ = ["IdVerdict", "Seen", "decode_seen", "encode_seen", "judge"]


@dataclass(frozen=True, slots=True)
class Seen:
    """Where and when an id was first accepted."""

    at: float
    partition: int
    offset: int


class IdVerdict(Enum):
    NEW = "new"
    REREAD = "reread"  # the same outbox record again (a batch read again after a crash)
    DUPLICATE = "duplicate"


def judge(seen: Seen | None, partition: int, offset: int, now: float,
          window: float) -> IdVerdict:
    """NEW when the id was not accepted within ``window`` seconds before ``now``."""
    if seen is None or seen.at <= now - window:
        return IdVerdict.NEW
    if seen.partition == partition and seen.offset == offset:
        return IdVerdict.REREAD
    return IdVerdict.DUPLICATE


def encode_seen(s: Seen) -> bytes:
    return json.dumps({"at": s.at, "partition": s.partition, "offset": s.offset}).encode()


def decode_seen(raw: bytes) -> Seen:
    d = json.loads(raw)
    return Seen(float(d["at"]), int(d["partition"]), int(d["offset"]))
