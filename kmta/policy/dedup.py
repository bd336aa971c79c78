"""Duplicate message ids: the same id accepted twice inside the dedup window is refused.

Pure: the caller keeps the map of ids seen (loaded from a compacted topic, see
``streams/app.py``) and passes the time in. A record read again after a crash (same outbox
partition and offset) is not a duplicate: it is routed again, as at-least-once reading requires.
"""
from __future__ import annotations

import json
import math
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
    """``json.dumps`` of ``{"at", "partition", "offset"}``, written by hand for the usual types
    (a finite float time, int places: one record per routed message; a unit test compares)."""
    at, partition, offset = s.at, s.partition, s.offset
    if type(at) is float and math.isfinite(at) and type(partition) is int and (
            type(offset) is int):
        return f'{{"at": {at!r}, "partition": {partition}, "offset": {offset}}}'.encode()
    return json.dumps({"at": at, "partition": partition, "offset": offset}).encode()


def decode_seen(raw: bytes) -> Seen:
    d = json.loads(raw)
    return Seen(float(d["at"]), int(d["partition"]), int(d["offset"]))
