"""The brain table's values: each ISP's ``Row`` as compact JSON bytes (the table value and its
changelog record), and the row last written for each ISP kept decoded beside the table.

The decide agent reads an ISP's row, applies one event and writes the row back, for every
delivery event. Decoding the bytes it wrote itself a moment before (pydantic validation) and
faust's JSON codec over a ``model_dump`` dict were most of what the round trip cost; now the
row is encoded once by pydantic (fields at their default left out: the changelog carries what
differs) and decoded only when the table holds something else than what this process wrote
last (a restart, a rebalance, the other agent's write)."""
from __future__ import annotations

from streams.brain import Row

__all__ = ["Rows", "decode", "encode"]


def encode(row: Row) -> bytes:
    """The table value of ``row``: its JSON without the fields at their default."""
    return row.model_dump_json(exclude_defaults=True).encode()


def decode(value: bytes | str) -> Row:
    """A table value as a ``Row``: this module's encoding, or the whole-row JSON that faust's
    codec wrote before (missing fields take their defaults either way)."""
    return Row.model_validate_json(value)


class Rows:
    """The decoded row of each ISP next to the table value it was encoded to."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[bytes, Row]] = {}

    def take(self, isp: str, stored: bytes | None) -> Row:
        """The row whose table value is ``stored`` (a new row when None). The decoded copy is
        handed out, not shared: until ``put`` brings it back, a row changed by an event that
        then failed is not handed out again for the old value."""
        last = self._last.pop(isp, None)
        if stored is None:
            return Row(isp=isp)
        if last is not None and last[0] == stored:
            return last[1]
        return decode(stored)

    def put(self, isp: str, row: Row) -> bytes:
        """The table value to write for ``row``, remembered with the row."""
        value = encode(row)
        self._last[isp] = (value, row)
        return value
