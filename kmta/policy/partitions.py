"""Which queue partition an ISP's messages go to.

Known ISPs get dedicated partitions (isolation: a slow or locked ISP never shares a partition
with another known ISP); unknown ISPs hash into the shared partitions after them. A big ISP with
``partitions = k`` is spread over k partitions, which may be owned by different sender nodes.
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping

from kmta.errors import ConfigError

__all__ = ["PartitionMap"]


class PartitionMap:
    """Deterministic ISP -> partitions map over a queue topic of ``total`` partitions."""

    def __init__(self, dedicated: Mapping[str, int], total: int, min_shared: int = 2) -> None:
        need = sum(dedicated.values()) + min_shared
        if total < need:
            raise ConfigError(
                f"the queue topic needs at least {need} partitions ({sum(dedicated.values())} "
                f"dedicated to known ISPs + {min_shared} shared); it has {total}"
            )
        self.total = total
        self._ranges: dict[str, tuple[int, int]] = {}
        nxt = 0
        for isp in sorted(dedicated):
            k = dedicated[isp]
            if k > 0:
                self._ranges[isp] = (nxt, k)
                nxt += k
        self.shared_start = nxt
        self.shared_count = total - nxt
        self._owner = {p: isp for isp, (s, k) in self._ranges.items() for p in range(s, s + k)}

    def partitions_of(self, isp: str) -> list[int]:
        """Every partition the ISP's messages may be on."""
        if isp in self._ranges:
            start, k = self._ranges[isp]
            return list(range(start, start + k))
        return [self.shared_start + _hash(isp) % self.shared_count]

    def partition_for(self, isp: str, message_id: str) -> int:
        """The partition of one message: spread over the ISP's partitions by message id."""
        parts = self.partitions_of(isp)
        return parts[0] if len(parts) == 1 else parts[_hash(message_id) % len(parts)]

    def dedicated_isp(self, partition: int) -> str | None:
        """The known ISP that owns the partition alone, or None for a shared partition."""
        return self._owner.get(partition)

    def share(self, isp: str, partition: int) -> tuple[int, int]:
        """``(slot, k)``: this partition is slot ``slot`` of the ISP's ``k`` partitions."""
        parts = self.partitions_of(isp)
        return (parts.index(partition) if partition in parts else 0), len(parts)


def _hash(s: str) -> int:
    return zlib.crc32(s.encode())
