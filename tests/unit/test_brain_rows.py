"""The brain table's values (``streams/rows.py``): a row survives its table encoding whole,
rows written by faust's JSON codec before still read, and the decoded row kept beside the table
is handed out only for the value it was encoded to."""
from __future__ import annotations

import json

from kmta.config import ReputationConfig
from kmta.policy.kb import KnowledgeBase
from schemas import DeliveryEvent, Status
from streams.brain import Row, apply_event, apply_reputation
from streams.rows import Rows, decode, encode

KB = KnowledgeBase.load()
ISP = "gmail"
IPS = ("192.0.2.1", "192.0.2.2", "192.0.2.3")
THROTTLE = "4.7.28 Our system has detected an unusual rate of unsolicited mail. rate limited"


def events(n: int, t: float = 1000.0) -> list[DeliveryEvent]:
    out = []
    for i in range(n):
        ip, at = IPS[i % len(IPS)], t + i * 0.01
        if i % 37 == 5:  # now and then a provider's rate limit
            out.append(DeliveryEvent(id=f"t{i}", to="u@gmail.com", isp=ISP, domain="gmail.com",
                                     status=Status.DEFERRED, final=False, attempt=1, code=421,
                                     enhanced_code="4.7.28", response=THROTTLE,
                                     category="rate_limit", source_ip=ip, node="n1",
                                     timestamp=at, campaign="c1", sender="s@example.com"))
        else:
            out.append(DeliveryEvent(id=f"m{i}", to="u@gmail.com", isp=ISP, domain="gmail.com",
                                     status=Status.DELIVERED, final=True, attempt=1, code=250,
                                     enhanced_code="2.0.0", response="ok", category="delivered",
                                     source_ip=ip, node="n1", timestamp=at, campaign="c1",
                                     sender="s@example.com"))
    return out


def same(a: Row, b: Row) -> bool:
    """Equal as stored: a row kept in memory holds tuples where a decoded one holds lists."""
    return a.model_dump(mode="json") == b.model_dump(mode="json")


def run(evs: list[DeliveryEvent], through_table: bool) -> tuple[Row, list[list[str]]]:
    """Apply ``evs`` as the decide agent does; with ``through_table`` the row is encoded and
    decoded again between events (a new process each time), else kept in memory."""
    row, published = Row(isp=ISP), []
    for offset, ev in enumerate(evs):
        if through_table:
            row = decode(encode(row))
        assert row.first_time(0, offset)
        apply_reputation(row, ev, ReputationConfig(), ev.timestamp)
        changed = apply_event(row, ev, KB, ev.timestamp)
        published.append([st.to_json().decode() for st in changed])
    return row, published


def test_a_row_decoded_at_every_event_decides_as_one_kept_in_memory() -> None:
    evs = events(600)
    kept, kept_pub = run(evs, through_table=False)
    stored, stored_pub = run(evs, through_table=True)
    assert stored_pub == kept_pub
    assert any(kept_pub) and kept.ip_speed and kept.rates and kept.applied == (0, 599)
    assert same(stored, kept)
    assert same(decode(encode(kept)), kept)


def test_rows_written_by_fausts_json_codec_still_read() -> None:
    row, _ = run(events(200), through_table=False)
    before = json.dumps(row.model_dump(mode="json")).encode()  # faust's "json" codec
    assert same(decode(before), row)
    assert len(encode(row)) < len(before)
    assert encode(Row(isp=ISP)) == b'{"isp":"gmail"}'  # nothing at its default is written


def test_the_kept_row_is_handed_out_for_its_own_value_only() -> None:
    rows = Rows()
    row = rows.take(ISP, None)
    assert row == Row(isp=ISP)
    row.ip_seen["192.0.2.1"] = 5.0
    value = rows.put(ISP, row)
    assert rows.take(ISP, value) is row  # what this process wrote: not decoded again
    rows.put(ISP, row)
    assert rows.take(ISP, bytes(value)) is row  # an equal value, as a store that copies
    rows.put(ISP, row)
    other = Row(isp=ISP, rules_version=3)
    got = rows.take(ISP, encode(other))  # someone else wrote the table (rebalance, restart)
    assert got == other and got is not row


def test_a_row_taken_and_not_put_back_is_not_handed_out_again() -> None:
    rows = Rows()
    row = rows.take(ISP, None)
    value = rows.put(ISP, row)
    taken = rows.take(ISP, value)
    taken.ip_seen["192.0.2.9"] = 1.0  # an event changed it, then failed before the write
    again = rows.take(ISP, value)  # the table still holds the old value
    assert again is not taken and again == Row(isp=ISP)
