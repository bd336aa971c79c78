"""What a processing step wants written: plain records, produced by the caller's edge."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Out:
    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
