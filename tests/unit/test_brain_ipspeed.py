"""The brain's speed level per source IP (speed.per_ip): a throttle on one IP of a pool lowers
that IP's level only, each IP's ``<isp>|<ip>`` record carries its level and the ISP's record
the lowest, and an event builds and returns only the records it changed."""

from __future__ import annotations

import json

from kmta.policy.ipspeed import IDLE, idle
from kmta.policy.kb import KnowledgeBase
from schemas import DeliveryEvent, IspState, Status
from streams.brain import Row, apply_event, states_of

KB = KnowledgeBase.load()
ISP = "gmail"
A, B = "192.0.2.1", "192.0.2.2"
THROTTLE = "4.7.28 Our system has detected an unusual rate of unsolicited mail. rate limited"


def ev(ip: str, t: float, throttled: bool = False, n: int = 0) -> DeliveryEvent:
    if throttled:
        return DeliveryEvent(id=f"t{n}", to="u@gmail.com", isp=ISP, domain="gmail.com",
                             status=Status.DEFERRED, final=False, attempt=1, code=421,
                             enhanced_code="4.7.28", response=THROTTLE, category="rate_limit",
                             source_ip=ip, node="n1", timestamp=t)
    return DeliveryEvent(id=f"m{n}", to="u@gmail.com", isp=ISP, domain="gmail.com",
                         status=Status.DELIVERED, final=True, attempt=1, code=250,
                         enhanced_code="2.0.0", response="ok", category="delivered",
                         source_ip=ip, node="n1", timestamp=t)


def published(row: Row, t: float) -> dict[str, IspState]:
    return {s.key: s for s in states_of(row, KB.effective(ISP, row.rules), t)}


def run_clean(row: Row, ips: tuple[str, ...], t: float, seconds: float,
              throttle: dict[str, list[float]] | None = None) -> tuple[Row, float]:
    """Each IP sends 20 messages a second, clean and busy, except for throttles at the given
    times; the row goes through JSON each second, as through the table's changelog."""
    throttle = throttle or {}
    end = t + seconds
    n = 0
    while t < end:
        for ip in ips:
            thr = any(abs(t - x) < 0.025 for x in throttle.get(ip, ()))
            apply_event(row, ev(ip, t, thr, n), KB, t)
            n += 1
        t += 0.05
        if n % 40 < len(ips):
            row = Row.model_validate(json.loads(json.dumps(row.model_dump(mode="json"))))
    return row, t


def test_a_throttle_on_one_ip_lowers_that_ip_only() -> None:
    row = Row(isp=ISP)
    row, t = run_clean(row, (A, B), 1000.0, 20.0)  # startup: both grow together
    st = published(row, t)
    assert st[f"{ISP}|{A}"].speed == st[f"{ISP}|{B}"].speed == st[ISP].speed > 4 * 30
    grown = st[ISP].speed
    row, t = run_clean(row, (A, B), t, 20.0, {B: [t + 1.0, t + 8.0]})  # B's provider refuses
    st = published(row, t)
    a, b = st[f"{ISP}|{A}"].speed, st[f"{ISP}|{B}"].speed
    assert a is not None and b is not None
    assert b < grown and a > grown  # B fell at its knee; A went on growing
    assert st[ISP].speed == b  # the ISP's record: the lowest level
    assert row.speed is None  # no shared level


def test_an_event_returns_only_the_records_it_changed() -> None:
    row = Row(isp=ISP)
    t = 1000.0
    first = apply_event(row, ev(A, t), KB, t)
    assert [s.key for s in first] == [f"{ISP}|{A}"]  # a new level, at the start speed
    changed = []
    while not changed:  # clean and busy: the first decision period raises A
        t += 0.05
        changed = apply_event(row, ev(A, t), KB, t)
    assert {s.key for s in changed} == {ISP, f"{ISP}|{A}"}  # A's level, and the lowest
    apply_event(row, ev(B, t), KB, t)  # B starts at the ISP's lowest level: A's
    assert published(row, t)[f"{ISP}|{B}"].speed == published(row, t)[f"{ISP}|{A}"].speed
    t += 0.001
    again = apply_event(row, ev(B, t), KB, t)
    assert again == []  # nothing changed: nothing built to publish


def test_a_new_ip_starts_from_the_lowest_learned_level() -> None:
    row = Row(isp=ISP)
    row, t = run_clean(row, (A,), 1000.0, 20.0, {A: [1010.0]})  # A's knee at ~10 s
    level = row.ip_speed[A]
    assert level["mode"] == "probe"  # A probes above its floor: B starts at the floor
    apply_event(row, ev(B, t), KB, t)
    assert published(row, t)[f"{ISP}|{B}"].speed == round(level["floor"], 3)
    assert published(row, t)[ISP].speed == round(level["floor"], 3)  # now the lowest


def test_ip_initial_sets_a_new_ips_first_level() -> None:
    row = Row(isp=ISP, rules={"speed": {"ip_initial": 90}})
    apply_event(row, ev(A, 1000.0), KB, 1000.0)
    assert published(row, 1000.0)[f"{ISP}|{A}"].speed == 90


def test_per_ip_off_shares_one_level_and_publishes_no_ip_speeds() -> None:
    row = Row(isp=ISP, rules={"speed": {"per_ip": False}})
    row, t = run_clean(row, (A, B), 1000.0, 20.0)
    row, t = run_clean(row, (A, B), t, 5.0, {B: [t + 1.0]})
    st = published(row, t)
    assert row.ip_speed == {} and row.speed is not None
    assert f"{ISP}|{A}" not in st and f"{ISP}|{B}" not in st
    assert st[ISP].speed == round(row.speed["speed"], 3)


def test_a_row_from_before_per_ip_levels_seeds_its_ips_with_the_shared_level() -> None:
    old = Row(isp=ISP, rules={"speed": {"per_ip": False}})
    old, t = run_clean(old, (A,), 1000.0, 13.0, {A: [1010.0]})  # held after its knee
    assert old.speed is not None and old.speed["mode"] == "hold"
    learned = published(old, t)[ISP].speed
    row = Row.model_validate({**old.model_dump(mode="json"), "rules": None})
    apply_event(row, ev(A, t), KB, t)
    apply_event(row, ev(B, t), KB, t)
    st = published(row, t)
    assert st[f"{ISP}|{A}"].speed == st[f"{ISP}|{B}"].speed == learned == st[ISP].speed


def test_an_ip_without_events_for_a_day_leaves_the_row_and_its_record_goes_blank() -> None:
    """An IP taken out of the pool: its low level no longer holds down the ISP's record (the
    lowest) nor the level new IPs start from; its own record is published blank."""
    row = Row(isp=ISP)
    row, t = run_clean(row, (A, B), 1000.0, 20.0)
    row, t = run_clean(row, (A, B), t, 20.0, {B: [t + 1.0, t + 8.0]})
    assert published(row, t)[ISP].speed == published(row, t)[f"{ISP}|{B}"].speed
    row, t = run_clean(row, (A,), t, 60.0)  # B is gone; A alone for a minute
    assert B in row.ip_speed  # a minute is not a day
    later = t + IDLE
    out = apply_event(row, ev(A, later, n=99), KB, later)
    assert B not in row.ip_speed and B not in row.ip_seen
    (blank,) = [s for s in out if s.source_ip == B]
    assert blank.speed is None and blank.updated_at == 0.0
    st = published(row, later)
    assert f"{ISP}|{B}" not in st and st[ISP].speed == st[f"{ISP}|{A}"].speed


def test_idle_ips_are_those_not_seen_for_the_period() -> None:
    seen = {A: 0.0, B: 100.0}
    assert idle(seen, [A, B, "192.0.2.9"], now=IDLE + 50.0) == [A]  # never seen: not idle
    assert idle(seen, [A, B], now=IDLE + 100.0) == [A, B]
