"""The decide agent's batches (``streams/decide.py``): each ISP's row is written once per batch,
and what it holds, and what is published, is what one write per event gave; an event replayed
after a restart is told, a failing event leaves nothing half applied, and an ISP whose results
move partition gets its row written to each."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

import streams.decide
from kmta.config import ReputationConfig
from kmta.policy.kb import KnowledgeBase
from schemas import DeliveryEvent, Status
from streams.brain import Row, apply_event, apply_reputation
from streams.decide import Decide, publish
from streams.rows import decode, encode

KB = KnowledgeBase.load()
THROTTLE = "4.7.28 Our system has detected an unusual rate of unsolicited mail. rate limited"
DOMAINS = {"gmail": "gmail.com", "yahoo": "yahoo.com"}


@dataclass
class Message:
    partition: int
    offset: int
    timestamp: float | None = None  # the record's Kafka timestamp (faust: seconds)


@dataclass
class Record:
    value: bytes
    message: Message


class FakeTable:
    """faust's table as Decide uses it: a store and changelog records by partition."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.changelog: list[tuple[int | None, str, bytes]] = []

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def send_changelog(self, partition: int | None, key: Any, value: Any) -> None:
        self.changelog.append((partition, key, value))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 0.004
        return self.t


def event(n: int, isp: str, status: Status = Status.DELIVERED, **kw: Any) -> DeliveryEvent:
    ip = f"192.0.2.{n % 2 + 1}"
    base = dict(id=f"m{n}", to=f"u{n}@{DOMAINS[isp]}", isp=isp, domain=DOMAINS[isp],
                status=status, final=True, attempt=1, code=250, enhanced_code="2.0.0",
                response="ok", category="delivered", source_ip=ip, node="n1",
                timestamp=1000.0 + n * 0.004, campaign="c1", sender="s@example.com")
    if status is Status.DEFERRED:
        base.update(final=False, code=421, enhanced_code="4.7.28", response=THROTTLE,
                    category="rate_limit")
    return DeliveryEvent(**{**base, **kw})


def records(n: int, start: int = 0) -> list[Record]:
    """Results as the senders and the router write them: a queued event, then the outcome;
    two ISPs, now and then a rate limit, both on partition 0."""
    out, offset = [], start
    for i in range(start, start + n):
        isp = "gmail" if i % 3 else "yahoo"
        out.append(Record(event(i, isp, Status.QUEUED, final=False, code=None).to_json(),
                          Message(0, offset)))
        status = Status.DEFERRED if i % 29 == 4 else Status.DELIVERED
        out.append(Record(event(i, isp, status).to_json(), Message(0, offset + 1)))
        offset += 2
    return out


def per_event(recs: list[Record], clock: Clock) -> tuple[dict[str, bytes], list[bytes]]:
    """The agent before batches: each event's row read from and written to the table."""
    table: dict[str, dict] = {}
    sent: list[bytes] = []
    for r in recs:
        ev = DeliveryEvent.model_validate_json(r.value)
        if ev.status is Status.QUEUED:
            continue
        now = clock()
        known = table.get(ev.isp)
        row = Row.model_validate(known) if known else Row(isp=ev.isp)
        assert row.first_time(r.message.partition, r.message.offset)
        held = apply_reputation(row, ev, ReputationConfig(), now)
        changed = apply_event(row, ev, KB, now)
        if changed or not known or held:
            sent += [o.value for o in publish(row, now, KB, "state",
                                              None if not known or held else changed)]
        table[ev.isp] = row.model_dump(mode="json")
    return {k: encode(Row.model_validate(v)) for k, v in table.items()}, sent


class Decider(Decide):
    def run(self, recs: list[Record]) -> list[Any]:
        """A batch as the agent runs it: applied, its records sent, its rows written."""
        outs = self.batch(recs)
        self.write()
        return outs


def decider(table: FakeTable, clock: Clock) -> Decider:
    return Decider(table, KB, ReputationConfig(), "n1", lambda name: name, lambda: None, clock)


def rows_of(data: dict[str, bytes]) -> dict[str, Any]:
    return {k: decode(v).model_dump(mode="json") for k, v in data.items()}


def test_one_write_per_isp_and_batch_holds_what_a_write_per_event_held() -> None:
    recs = records(300)
    want, want_sent = per_event(recs, Clock())
    table = FakeTable()
    d = decider(table, Clock())
    sent: list[bytes] = []
    for i in range(0, len(recs), 100):  # batches of 100 records: 50 outcomes
        sent += [o.value for o in d.run(recs[i:i + 100]) if o.topic == "state"]
    assert rows_of(table.data) == rows_of(want)
    assert sent == want_sent and sent
    assert len(table.changelog) == 2 * 6  # two ISPs, six batches (600 results records)
    assert all(p == 0 for p, _, _ in table.changelog)
    assert table.changelog[-1][2] == table.data[table.changelog[-1][1]]


def test_records_applied_before_a_restart_are_told() -> None:
    recs = records(40)
    table = FakeTable()
    d = decider(table, Clock())
    d.run(recs)
    written = dict(table.data)
    assert d.run(recs[10:]) == []  # faust delivers again what followed the last commit
    assert table.data == written and len(table.changelog) == 2


def test_a_failing_event_leaves_its_row_as_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    recs = records(60)
    bad = json.loads(recs[33].value)["id"]  # an outcome of gmail's in the middle of the batch
    assert json.loads(recs[33].value)["isp"] == "gmail"
    real = streams.decide.apply_event

    def failing(row: Row, ev: DeliveryEvent, *a: Any) -> Any:
        if ev.id == bad:
            row.ip_seen["203.0.113.9"] = 1.0  # half applied ...
            raise RuntimeError("boom")  # ... then a bug
        return real(row, ev, *a)
    monkeypatch.setattr(streams.decide, "apply_event", failing)
    table = FakeTable()
    sent = decider(table, Clock()).run(recs)
    monkeypatch.setattr(streams.decide, "apply_event", real)
    ref, clock = FakeTable(), Clock()  # the same records without the failing one
    d = decider(ref, clock)
    ref_sent = d.run(recs[:33])
    clock()  # the failed event took its clock reading
    ref_sent += d.run(recs[34:])
    assert "203.0.113.9" not in decode(table.data["gmail"]).ip_seen
    assert rows_of(table.data) == rows_of(ref.data)
    assert [o.value for o in sent] == [o.value for o in ref_sent]


def test_an_isp_whose_results_move_partition_is_written_to_each() -> None:
    recs = records(20)
    for r in recs[20:]:
        r.message.partition = 1
    table = FakeTable()
    decider(table, Clock()).run(recs)
    parts = [(p, k) for p, k, _ in table.changelog]
    assert sorted(parts) == [(0, "gmail"), (0, "yahoo"), (1, "gmail"), (1, "yahoo")]
    for partition, _key, value in table.changelog:  # each partition: its own events' row
        applied = decode(value).applied
        assert applied is not None and applied[0] == partition
        assert (applied[1] < 20) == (partition == 0)
    assert {k: decode(v).applied for k, v in table.data.items()} == {
        "gmail": (1, 39), "yahoo": (1, 37)}


def test_rows_wait_for_the_batchs_records() -> None:
    """The agent sends a batch's records before it writes the rows: a worker killed in between
    applies the batch again and sends them again (written first, they would be skipped)."""
    recs = records(30)
    table = FakeTable()
    d = decider(table, Clock())
    outs = d.batch(recs)
    assert outs and table.data == {} and table.changelog == []
    d.write()
    assert set(table.data) == {"gmail", "yahoo"} and len(table.changelog) == 2
    again = decider(FakeTable(), Clock()).batch(recs)  # nothing written: all applied again
    assert [o.value for o in again] == [o.value for o in outs]
    d.write()  # nothing changed since: nothing written
    assert len(table.changelog) == 2


def test_apply_delay_is_measured_from_the_events_own_timestamp() -> None:
    from prometheus_client import REGISTRY

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    count0 = sample("kmta_event_apply_delay_seconds_count")
    sum0 = sample("kmta_event_apply_delay_seconds_sum")
    late = Clock()
    late.t = 1000.0 + 30.0  # the brain runs 30 s behind the replies
    d = decider(FakeTable(), late)
    d.run(records(10))  # ten outcomes (the queued events are not applied)
    assert sample("kmta_event_apply_delay_seconds_count") - count0 == 10
    mean = (sample("kmta_event_apply_delay_seconds_sum") - sum0) / 10
    assert 29.0 < mean < 31.0
    assert sample("kmta_event_apply_delay_max_seconds") >= 30.0


def test_apply_delay_is_split_at_the_records_kafka_timestamp_and_the_batch_start() -> None:
    from prometheus_client import REGISTRY

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    names = ("kmta_event_record_delay_seconds", "kmta_record_batch_delay_seconds",
             "kmta_batch_apply_delay_seconds")
    count0 = {n: sample(n + "_count") for n in names}
    sum0 = {n: sample(n + "_sum") for n in names}
    recs = records(10)
    for r in recs:  # the sender's producer wrote each outcome 2 s after its reply
        r.message.timestamp = DeliveryEvent.model_validate_json(r.value).timestamp + 2.0
    late = Clock()
    late.t = 1000.0 + 30.0  # the batch starts ~30 s after the replies
    decider(FakeTable(), late).run(recs)
    mean = {n: (sample(n + "_sum") - sum0[n]) / (sample(n + "_count") - count0[n])
            for n in names}
    assert all(sample(n + "_count") - count0[n] == 10 for n in names)
    assert mean["kmta_event_record_delay_seconds"] == pytest.approx(2.0)
    # events 0.004 s apart, the batch started once: records 28 s minus their offset old
    assert 27.9 < mean["kmta_record_batch_delay_seconds"] < 28.0
    assert 0.0 < mean["kmta_batch_apply_delay_seconds"] < 0.1  # the clock's ticks in the batch


def test_no_split_without_a_kafka_timestamp() -> None:
    from prometheus_client import REGISTRY
    before = REGISTRY.get_sample_value("kmta_event_record_delay_seconds_count") or 0.0
    decider(FakeTable(), Clock()).run(records(3))
    assert REGISTRY.get_sample_value("kmta_event_record_delay_seconds_count") == before
