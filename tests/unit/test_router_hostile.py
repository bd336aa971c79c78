"""One record never stops routing: whatever the bytes, the router answers with records to write
(a dead letter at worst) and never raises; a duplicate id is refused with its reason."""
from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmta.policy.dedup import IdVerdict, Seen, decode_seen, encode_seen, judge
from schemas import DeadLetter, DeliveryEvent, Status
from tests.unit.test_router import NOW, Harness, msg, on


def dead_letter(outs) -> DeadLetter:
    (o,) = on(outs, "dlq")
    return DeadLetter.model_validate_json(o.value)


def deep(n: int) -> str:
    return "[" * n + "]" * n


HOSTILE: list[tuple[str, bytes, str]] = [
    ("deep JSON", deep(100_000).encode(), "nested too deeply"),
    ("deep meta", json.dumps(msg(id="d-1")).encode()[:-1] + b', "meta": {"a": '
     + b'{"a": ' * 900 + b'1' + b'}' * 900 + b'}}', ""),
    ("lone surrogate in text", json.dumps(msg(id="s-1", text="a\ud800b")).encode(), ""),
    ("lone surrogate in subject", json.dumps(msg(id="s-2", subject="\udfff")).encode(), ""),
    ("vertical tab header", json.dumps(msg(id="v-1", subject="x\x0bBcc: a@b.c")).encode(), ""),
    ("surrogate in data", json.dumps({"from": "a@shop.example", "to": "b@gmail.com", "id": "s-3",
                                      "data": "Subject: x\r\n\r\n\ud800"}).encode(), ""),
    ("array", b"[1, 2]", "not a JSON object"),
    ("bytes", b"\xff\xfe\x00", "not JSON"),
]


@pytest.mark.parametrize("name,raw,reason", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_records_end_in_one_answer(name: str, raw: bytes, reason: str) -> None:
    h = Harness()
    outs = h.route(None, raw=raw)
    for o in outs:  # everything written is valid JSON (no lone surrogate reaches Kafka)
        json.loads(o.value)
    dlq = on(outs, "dlq")
    finals = [e for e in (DeliveryEvent.model_validate_json(o.value)
                          for o in on(outs, "results")) if e.final]
    queued = on(outs, "queue")
    # exactly one answer: a dead letter (maybe with a rejected event) or routed on
    assert len(dlq) + len(queued) >= 1
    assert len(finals) <= 1
    if dlq:
        assert reason in dead_letter(outs).reason


def test_an_unexpected_error_is_dead_lettered_with_the_reason() -> None:
    h = Harness()

    async def broken(domain: str):
        raise RuntimeError("resolver bug")
    h.resolver.mx = broken  # type: ignore[method-assign]
    from prometheus_client import REGISTRY

    def count(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0
    before = (count("kmta_unexpected_errors_total", component="worker", stage="route"),
              count("kmta_dlq_records_total", component="worker"))
    outs = h.route(msg(id="b-1"))
    assert (count("kmta_unexpected_errors_total", component="worker", stage="route"),
            count("kmta_dlq_records_total", component="worker")) == (before[0] + 1,
                                                                   before[1] + 1)
    dl = dead_letter(outs)
    assert "internal error while routing: RuntimeError: resolver bug" in dl.reason
    assert json.loads(dl.original)["id"] == "b-1"
    assert h.router.errors == 1
    # the id is free again: after the fix the same message routes
    h.resolver.mx = type(h.resolver).mx.__get__(h.resolver)  # type: ignore[method-assign]
    assert on(h.route(msg(id="b-1"), offset=8), "queue")


def test_an_invalid_id_gets_no_event_by_that_id() -> None:
    h = Harness()
    outs = h.route(msg(id="bad id with spaces", to="x"))
    assert on(outs, "results") == [] and dead_letter(outs).id is None
    outs = h.route(msg(id="ok-1", to="x"))  # a valid id: rejected, once
    (ev,) = [DeliveryEvent.model_validate_json(o.value) for o in on(outs, "results")]
    assert (ev.id, ev.status) == ("ok-1", Status.REJECTED)


def test_a_duplicate_id_is_refused_a_reread_is_routed_again() -> None:
    h = Harness()
    assert on(h.route(msg(id="m-1"), offset=7), "queue")
    again = h.route(msg(id="m-1"), offset=7)  # the same record read again after a crash
    assert on(again, "queue") and not on(again, "dlq")
    dup = h.route(msg(id="m-1", text="another"), offset=9)
    assert on(dup, "queue") == [] and on(dup, "results") == []  # no second final event
    assert "duplicate id 'm-1'" in dead_letter(dup).reason
    assert "offset 7" in dead_letter(dup).reason and "24 h" in dead_letter(dup).reason


def test_a_rejected_id_stays_taken() -> None:
    h = Harness()
    assert on(h.route(msg(id="r-1", to="nobody")), "results")
    dup = h.route(msg(id="r-1"), offset=12)
    assert on(dup, "queue") == [] and "duplicate" in dead_letter(dup).reason


def test_concurrent_twins_one_routes() -> None:
    h = Harness()

    async def both():
        return await asyncio.gather(h.router.route(json.dumps(msg(id="t-1")).encode(),
                                                   "u.outbox", 0, 1),
                                    h.router.route(json.dumps(msg(id="t-1")).encode(),
                                                   "u.outbox", 1, 1))
    a, b = asyncio.run(both())
    assert len(on(a, "queue")) + len(on(b, "queue")) == 1


def test_the_window_ends_and_can_be_turned_off() -> None:
    h = Harness()
    h.route(msg(id="w-1"), offset=1)
    h.router._clock = lambda: NOW + 24 * 3600 + 1
    assert on(h.route(msg(id="w-1"), offset=2), "queue")
    off = Harness()
    off.router._window = 0
    off.route(msg(id="w-2"), offset=1)
    assert on(off.route(msg(id="w-2"), offset=2), "queue")


def test_judge_and_its_record() -> None:
    s = Seen(100.0, 2, 40)
    assert judge(None, 2, 40, 200.0, 50.0) is IdVerdict.NEW
    assert judge(s, 2, 40, 120.0, 50.0) is IdVerdict.REREAD
    assert judge(s, 2, 41, 120.0, 50.0) is IdVerdict.DUPLICATE
    assert judge(s, 3, 40, 120.0, 50.0) is IdVerdict.DUPLICATE
    assert judge(s, 2, 41, 150.0, 50.0) is IdVerdict.NEW  # at the window's end
    assert decode_seen(encode_seen(s)) == s


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**60, 2**60)),
       st.integers(0, 2**16 - 1), st.integers(-1, 2**62))
def test_an_ids_record_is_what_json_dumps_writes(at: float, partition: int, offset: int) -> None:
    """encode_seen writes the record by hand for the usual types: the bytes of json.dumps."""
    s = Seen(at, partition, offset)
    assert encode_seen(s) == json.dumps({"at": at, "partition": partition,
                                         "offset": offset}).encode()
