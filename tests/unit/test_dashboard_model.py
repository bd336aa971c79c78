"""The dashboard's Board, fed with whole event sequences; counts must be exact."""

from __future__ import annotations

import pytest

from dashboard.model import NO_ISP, Board
from kmta.cli.control import format_status
from schemas.control import ControlAction, ControlCommand, ControlRecord
from schemas.events import DeliveryEvent, Status
from schemas.nodes import IspLoad, NodeStats
from schemas.state import IspState

T0 = 1_700_000_000.0


def ev(id_: str, status: str, t: float, isp: str | None = "gmail", **kw: object) -> DeliveryEvent:
    final = Status(status) not in (Status.QUEUED, Status.DEFERRED)
    return DeliveryEvent(
        id=id_, to=f"{id_}@example.com", isp=isp, status=status, final=final, timestamp=T0 + t, **kw
    )


def feed(board: Board, events: list[DeliveryEvent]) -> Board:
    for e in events:
        board.apply_event(e)
    return board


def row(board: Board, isp: str, now: float = 0.0) -> dict:
    return next(r for r in board.isp_rows(T0 + now) if r["isp"] == isp)


SEQUENCE = [
    ev("m1", "queued", 0, campaign="spring"),
    ev("m2", "queued", 0, campaign="spring"),
    ev("m3", "queued", 1, campaign="spring"),
    ev("m4", "queued", 1),
    ev("y1", "queued", 1, isp="yahoo", campaign="spring"),
    ev("m1", "delivered", 5, code=250, response="ok", attempt=1),
    ev(
        "m2",
        "deferred",
        6,
        code=421,
        enhanced_code="4.7.0",
        response="try later",
        category="throttled",
        attempt=1,
        next_attempt_at=T0 + 300,
    ),
    ev(
        "m3",
        "bounced",
        7,
        code=550,
        enhanced_code="5.1.1",
        response="no such user",
        category="bad_mailbox",
        attempt=1,
    ),
    ev(
        "y1",
        "deferred",
        8,
        isp="yahoo",
        code=421,
        response="TSS04",
        category="throttled",
        attempt=1,
    ),
    ev("m2", "queued", 300),  # due again: back on the queue
    ev("m2", "deferred", 301, code=421, response="try later", category="throttled", attempt=2),
    ev("y1", "delivered", 302, isp="yahoo", code=250, response="ok", attempt=2),
    ev("r1", "rejected", 303, isp=None, response="bad address"),
    ev("s1", "suppressed", 304),
]


def test_counts_follow_each_message_to_its_last_status() -> None:
    b = feed(Board(), SEQUENCE)
    g = row(b, "gmail", 400)
    assert (g["queued"], g["deferred_waiting"], g["delivered"], g["bounced"], g["suppressed"]) == (
        1,
        1,
        1,
        1,
        1,
    )  # m4 queued, m2 waiting, m1 delivered, m3 bounced, s1 suppressed
    assert g["bounced_by_category"] == {"bad_mailbox": 1}
    assert g["deferrals"] == 2
    assert g["success_rate"] == 0.5  # 1 delivered of 2 finished by delivery attempts
    assert g["last_reply"] == "421 try later"
    y = row(b, "yahoo", 400)
    assert (y["queued"], y["deferred_waiting"], y["delivered"]) == (0, 0, 1)
    assert row(b, NO_ISP)["rejected"] == 1
    t = b.totals()
    assert t["accepted"] == 7
    assert (
        t["queued"],
        t["deferred"],
        t["delivered"],
        t["bounced"],
        t["rejected"],
        t["suppressed"],
    ) == (1, 1, 2, 1, 1, 1)
    assert t["final"] == 5
    assert t["events"] == len(SEQUENCE)
    assert b.status_of("m2") is Status.DEFERRED


def test_duplicate_final_and_late_events_are_ignored() -> None:
    b = feed(Board(), SEQUENCE)
    before = b.totals()
    b.apply_event(ev("m1", "delivered", 500, code=250, response="ok"))  # redelivered result
    b.apply_event(ev("m3", "queued", 501))  # stray event after the final
    after = b.totals()
    assert after["duplicates"] == 2
    assert {k: v for k, v in after.items() if k not in ("events", "duplicates")} == {
        k: v for k, v in before.items() if k not in ("events", "duplicates")
    }


def test_cancel_and_expire_move_waiting_messages() -> None:
    b = feed(
        Board(),
        [
            ev("a", "queued", 0),
            ev("b", "queued", 0),
            ev("c", "queued", 0),
            ev("b", "deferred", 10, code=451, response="later", attempt=1),
            ev("c", "deferred", 10, code=451, response="later", attempt=1),
            ev("a", "cancelled", 20, internal=True, response="cleared by operator"),
            ev("b", "cancelled", 20, internal=True, response="cleared by operator"),
            ev("c", "expired", 90000, internal=True, response="too old"),
        ],
    )
    g = row(b, "gmail", 90001)
    assert (g["queued"], g["deferred_waiting"], g["cancelled"], g["expired"]) == (0, 0, 2, 1)
    assert g["success_rate"] == 0.0


def test_campaign_rows() -> None:
    b = feed(Board(), SEQUENCE)
    rows = {r["campaign"]: r for r in b.campaign_rows()}
    assert rows["spring"]["total"] == 4
    assert (rows["spring"]["delivered"], rows["spring"]["deferred"], rows["spring"]["bounced"]) == (
        2,
        1,
        1,
    )
    assert rows["(none)"]["total"] == 3


def test_lock_pause_speed_from_state() -> None:
    b = Board()
    b.apply_state(IspState(isp="gmail", speed=10, speed_min=1, speed_max=100, updated_at=T0))
    b.apply_state(IspState(isp="gmail", speed=20, speed_min=1, speed_max=100, updated_at=T0 + 60))
    b.apply_state(
        IspState(
            isp="gmail",
            speed=20,
            speed_min=1,
            speed_max=100,
            paused=True,
            locked_until=T0 + 3700,
            lock_reason="block-notice",
            lock_reply="421 4.7.28 blocked",
            updated_at=T0 + 100,
        )
    )
    b.apply_state(
        IspState(
            isp="gmail",
            source_ip="192.0.2.1",
            locked_until=T0 + 500,
            lock_reason="ip-block",
            updated_at=T0 + 100,
        )
    )
    g = row(b, "gmail", 200)
    assert g["locked"] and g["lock_reason"] == "block-notice"
    assert g["lock_reply"] == "421 4.7.28 blocked" and g["lock_seconds_left"] == 3500
    assert g["paused"] and g["speed"] == 20 and (g["speed_min"], g["speed_max"]) == (1, 100)
    assert g["locked_ips"] == "192.0.2.1"
    assert g["ip_speeds"] == ""  # the IP's record carries no level of its own
    assert row(b, "gmail", 4000)["locked"] is False
    assert row(b, "gmail", 4000)["locked_ips"] == ""

    s = b.speed_series("gmail", T0)
    assert s["points"] == [(T0, 10), (T0 + 60, 20)]
    assert [(lo - T0, hi - T0, label) for lo, hi, label in s["locks"]] == [
        (100, 3700, "block-notice"),
        (100, 500, "192.0.2.1: ip-block"),
    ]
    # the value in force at `since` is carried in
    assert b.speed_series("gmail", T0 + 30)["points"] == [(T0 + 30, 10), (T0 + 60, 20)]


def test_pool_scopes_are_shown_apart_from_the_whole_isp() -> None:
    b = Board()
    b.apply_state(IspState(isp="gmail", speed=10, updated_at=T0))
    b.apply_state(IspState(isp="gmail", pool="warm", locked_until=T0 + 300,
                           lock_reason="warm-block", updated_at=T0 + 10))
    b.apply_state(IspState(isp="gmail", pool="main", paused=True, updated_at=T0 + 10))
    g = row(b, "gmail", 20)
    assert not g["locked"] and not g["paused"]  # the whole ISP is neither
    assert (g["locked_ips"], g["paused_ips"]) == ("pool warm", "pool main")
    # a later whole-ISP lock is a lock interval of its own, not the pool's extended
    b.apply_state(IspState(isp="gmail", speed=10, locked_until=T0 + 100, lock_reason="isp",
                           updated_at=T0 + 20))
    assert [(lo - T0, hi - T0, label) for lo, hi, label in b.speed_series("gmail", T0)["locks"]
            ] == [(10, 300, "pool warm: warm-block"), (20, 100, "isp")]


def test_unlock_closes_the_lock_interval() -> None:
    b = Board()
    b.apply_state(
        IspState(isp="gmail", speed=5, locked_until=T0 + 3600, lock_reason="x", updated_at=T0)
    )
    b.apply_state(IspState(isp="gmail", speed=5, updated_at=T0 + 120))  # operator unlock
    b.apply_state(
        IspState(isp="gmail", speed=5, locked_until=T0 + 900, lock_reason="y", updated_at=T0 + 600)
    )
    locks = [(lo - T0, hi - T0, label) for lo, hi, label in b.speed_series("gmail", T0)["locks"]]
    assert locks == [(0, 120, "x"), (600, 900, "y")]
    assert b.speed_series("gmail", T0)["points"] == [(T0, 5)]


def test_series_bucketed() -> None:
    b = feed(Board(), SEQUENCE)
    s = b.success_series("gmail", T0, bucket=60)
    assert T0 % 60 == 20  # so buckets start 20 s before T0 and T0 + 300
    assert s == [
        {"t": T0 - 20, "attempts": 3, "delivered": 1, "rate": round(1 / 3, 4)},
        {"t": T0 + 280, "attempts": 1, "delivered": 0, "rate": 0.0},
    ]
    all_ = b.success_series(None, T0, bucket=3600)
    assert sum(r["attempts"] for r in all_) == 6 and sum(r["delivered"] for r in all_) == 2
    assert b.success_series("nobody", T0) == []
    later = b.success_series("gmail", T0 + 200, bucket=60)
    assert sum(r["attempts"] for r in later) == 1
    assert b.category_counts(T0) == {"throttled": 3, "bad_mailbox": 1}
    assert b.category_counts(T0 + 200) == {"throttled": 1}
    thr = b.throughput_series(T0, bucket=3600)
    assert sum(r["delivered"] for r in thr) == 2 and sum(r["deferred"] for r in thr) == 3


def test_internal_deferrals_are_not_attempts() -> None:
    b = feed(
        Board(),
        [
            ev("a", "queued", 0),
            ev("a", "deferred", 1, internal=True, response="ISP locked"),
            ev("a", "delivered", 2, code=250),
        ],
    )
    assert sum(r["attempts"] for r in b.success_series("gmail", T0, 60)) == 1


def test_old_buckets_pruned() -> None:
    b = Board(retention=3600)
    feed(
        b,
        [
            ev("a", "queued", 0),
            ev("a", "delivered", 1, code=250),
            ev("b", "queued", 7200),
            ev("b", "delivered", 7201, code=250),
        ],
    )
    assert sum(r["delivered"] for r in b.success_series(None, 0, 60)) == 1
    assert b.totals()["delivered"] == 2  # counts are never pruned


def node(name: str, t: float, delivered: int, **isps: IspLoad) -> NodeStats:
    return NodeStats(
        node=name,
        partitions=[0, 1] if name == "n1" else [2],
        isps=isps,
        delivered_total=delivered,
        started_at=T0,
        timestamp=T0 + t,
    )


def test_nodes_in_flight_and_staleness() -> None:
    b = Board(stale_after=10)
    b.apply_node(node("n1", 0, 0, gmail=IspLoad(in_flight=3, connections=2)))
    b.apply_node(node("n1", 2, 40, gmail=IspLoad(in_flight=5, connections=2, backlog=7)))
    b.apply_node(
        node(
            "n2",
            2,
            0,
            gmail=IspLoad(in_flight=1, connections=1),
            yahoo=IspLoad(in_flight=4, connections=3),
        )
    )
    g = row(b, "gmail", 3)
    assert (g["in_flight"], g["connections"], g["node_backlog"]) == (6, 3, 7)
    rows = {r["node"]: r for r in b.node_rows(T0 + 3)}
    assert rows["n1"]["throughput"] == 20.0 and rows["n1"]["partitions"] == "0, 1"
    assert rows["n2"]["isps"] == "gmail, yahoo" and rows["n2"]["status"] == "ok"
    b.apply_node(node("n2", 14, 0, yahoo=IspLoad(in_flight=2, connections=1)))
    rows = {r["node"]: r for r in b.node_rows(T0 + 15)}
    assert rows["n1"]["stale"] and rows["n1"]["status"] == "stale"
    assert not rows["n2"]["stale"]
    assert row(b, "gmail", 15)["in_flight"] == 0  # stale node no longer counted
    assert row(b, "yahoo", 15)["in_flight"] == 2
    b.apply_node(
        node(
            "n2",
            15,
            0,
        ).model_copy(update={"stopping": True})
    )
    assert {r["node"]: r for r in b.node_rows(T0 + 15)}["n2"]["status"] == "stopping"


def test_audit_rows_newest_first() -> None:
    cmd = ControlCommand(
        id="c1", action=ControlAction.PAUSE, isp="gmail", actor="alice", timestamp=T0
    )
    b = Board()
    b.apply_audit(ControlRecord(command=cmd, applied=True, timestamp=T0 + 1))
    b.apply_audit(ControlRecord(raw="garbage", applied=False, error="malformed", timestamp=T0 + 2))
    rows = b.audit_rows()
    assert rows[0]["error"] == "malformed" and rows[0]["actor"] is None and not rows[0]["applied"]
    assert rows[1] == pytest.approx(
        {
            **rows[1],
            "actor": "alice",
            "action": "pause",
            "isp": "gmail",
            "applied": True,
            "time": T0 + 1,
        }
    )


def test_isps_known_from_state_only_appear() -> None:
    b = Board()
    b.apply_state(IspState(isp="outlook", paused=True, updated_at=T0))
    r = row(b, "outlook")
    assert r["paused"] and r["queued"] == 0 and r["success_rate"] is None


def test_large_replay_stays_exact() -> None:
    b = Board()
    n = 20000
    for i in range(n):
        b.apply_event(ev(f"x{i}", "queued", i * 0.01, isp=f"isp{i % 7}"))
    for i in range(n):
        st = "delivered" if i % 3 else "deferred"
        b.apply_event(ev(f"x{i}", st, 300 + i * 0.01, isp=f"isp{i % 7}", code=250))
    t = b.totals()
    assert t["accepted"] == n
    assert t["delivered"] + t["deferred"] == n and t["queued"] == 0
    assert t["deferred"] == len(range(0, n, 3))


def test_signing_rows_per_sending_domain() -> None:
    b = feed(Board(), [
        ev("a", "queued", 1.0, sender="b+x@bounce.shop.example",
           dkim=["r1._domainkey.shop.example", "e1._domainkey.shop.example"]),
        ev("b", "queued", 2.0, sender="b+y@bounce.shop.example",
           dkim=["r1._domainkey.shop.example"]),
        ev("b", "delivered", 3.0, sender="b+y@bounce.shop.example"),  # counted once
        ev("c", "queued", 4.0, sender="x@other.test"),
    ])
    configured = [{"domain": "shop.example", "selectors": [
        {"selector": "r1", "algorithm": "rsa-sha256", "active": True},
        {"selector": "e1", "algorithm": "ed25519-sha256", "active": True},
        {"selector": "r0", "algorithm": "rsa-sha256", "active": False}]},
        {"domain": "idle.example", "selectors": [
            {"selector": "s", "algorithm": "rsa-sha256", "active": False}]}]
    rows = {r["domain"]: r for r in b.signing_rows(configured)}
    shop = rows["shop.example"]
    assert (shop["signing_now"], shop["signed"], shop["unsigned"]) == ("yes", 2, 0)
    assert shop["selectors"] == "r1 (rsa), e1 (ed25519), r0 (rsa, inactive)"
    assert shop["seen"] == "e1@shop.example: 1, r1@shop.example: 2"
    assert rows["idle.example"]["signing_now"] == "NO"
    assert (rows["other.test"]["signing_now"], rows["other.test"]["unsigned"]) == (
        "not configured", 1)


def test_feedback_after_final_keeps_the_outcome() -> None:
    b = feed(Board(), [
        ev("f1", "queued", 0, campaign="spring"),
        ev("f1", "delivered", 1, code=250, response="ok", attempt=1),
        DeliveryEvent(id="f1", to="f1@example.com", isp="gmail", status=Status.ASYNC_BOUNCE,
                      final=False, code=550, timestamp=T0 + 50, campaign="spring"),
        DeliveryEvent(id="f1", to="f1@example.com", isp="gmail", status=Status.COMPLAINT,
                      final=False, timestamp=T0 + 60, campaign="spring"),
    ])
    assert b.status_of("f1") is Status.DELIVERED
    t = b.totals()
    assert (t["delivered"], t["async_bounce"], t["complaint"], t["final"], t["duplicates"]) == (
        1, 1, 1, 1, 0)
    r = row(b, "gmail")
    assert (r["delivered"], r["async_bounce"], r["complaint"]) == (1, 1, 1)


def test_reputation_rows_per_isp_domain_campaign() -> None:
    from schemas.events import FeedbackInfo
    evs = []
    for i in range(1000):
        evs.append(ev(f"r{i}", "delivered", 10, sender="b+x@bounces.shop.example",
                      campaign="spring", code=250))
    for i in range(4):
        evs.append(DeliveryEvent(id=f"r{i}", to="x@gmail.com", isp="gmail",
                                 status=Status.COMPLAINT, final=False, timestamp=T0 + 20,
                                 campaign="spring", sender="b+x@bounces.shop.example",
                                 feedback=FeedbackInfo(tied_by="verp", hard=True)))
    evs.append(DeliveryEvent(id="r9", to="x@gmail.com", isp="gmail", status=Status.ASYNC_BOUNCE,
                             final=False, timestamp=T0 + 20, campaign="spring",
                             feedback=FeedbackInfo(tied_by="verp", hard=False)))  # soft: no
    b = feed(Board(), evs)
    rows = {r["key"]: r for r in b.reputation_rows(T0 + 30)}
    g = rows["isp:gmail|campaign:spring"]
    assert (g["delivered_24h"], g["complaint_24h"], g["hard_bounce_24h"]) == (1000, 0.004, 0.0)
    assert "0.40% over 0.30%" in g["over"]
    assert rows["domain:bounces.shop.example"]["over"] is None  # not ISP-scoped
    assert rows["campaign:spring"]["complaint_7d"] == 0.004
    assert b.status_of("r1") is Status.DELIVERED


def test_reputation_rows_name_their_scope_limit_and_the_brains_holds() -> None:
    from schemas.events import FeedbackInfo
    b = Board()
    for i in range(10):
        b.apply_event(ev(f"h{i}", "delivered", 10, sender="b+x@bounces.shop.example",
                         campaign="spring", code=250))
    b.apply_event(DeliveryEvent(id="h0", to="x@gmail.com", isp="gmail", status=Status.COMPLAINT,
                                final=False, timestamp=T0 + 20, campaign="spring",
                                sender="b+x@bounces.shop.example",
                                feedback=FeedbackInfo(tied_by="verp", hard=True)))
    why = "complaint rate 10.00% over 0.30% (1 of 10 delivered in 24 h)"
    b.apply_state(IspState(isp="gmail", holds={"campaign:spring": why,
                                               "domain:old.example": "earlier"}))
    b.apply_state(IspState(isp="gmail", source_ip="192.0.2.1", holds={"campaign:x": "no"}))
    rows = {r["key"]: r for r in b.reputation_rows(T0 + 30, {"gmail": 0.05}, 10)}
    sc = {k: (r["scope"], r["isp"], r["name"], r["limit"], r["held"]) for k, r in rows.items()}
    assert sc == {
        "isp:gmail": ("isp", "gmail", "gmail", 0.05,
                      f"campaign:spring: {why}; domain:old.example: earlier"),
        "domain:bounces.shop.example": ("domain", None, "bounces.shop.example", None, None),
        "isp:gmail|domain:bounces.shop.example": (
            "isp_domain", "gmail", "bounces.shop.example", 0.05, None),
        "campaign:spring": ("campaign", None, "spring", None, f"at gmail: {why}"),
        "isp:gmail|campaign:spring": ("isp_campaign", "gmail", "spring", 0.05, why),
        # held by the brain, nothing counted here (e.g. before the panel's topics begin)
        "isp:gmail|domain:old.example": ("isp_domain", "gmail", "old.example", 0.05,
                                         "earlier"),
    }
    assert rows["isp:gmail|domain:old.example"]["complaint_24h"] is None
    assert "10.00% over 5.00%" in rows["isp:gmail|campaign:spring"]["over"]  # limits given
    assert rows["isp:gmail|campaign:spring"]["complaint_24h"] == 0.1


def test_reputation_counts_older_than_a_week_are_dropped() -> None:
    """The panel's hourly reputation counts stay bounded: a scope whose last event is more than
    the longest window (7 d) old goes once newer events come."""
    b = feed(Board(), [ev("old", "delivered", 0, campaign="spring", code=250)])
    assert "campaign:spring" in b._rates.buckets  # what the panel holds in memory
    b.apply_event(ev("new", "delivered", 8 * 86400, campaign="autumn", code=250))
    assert "campaign:autumn" in b._rates.buckets and "campaign:spring" not in b._rates.buckets
    assert "campaign:spring" not in {r["key"] for r in b.reputation_rows(T0 + 8 * 86400)}


def test_each_source_ips_own_speed_level_is_shown_with_its_isp() -> None:
    b = Board()
    b.apply_state(IspState(isp="gmail", speed=120, updated_at=T0))  # the lowest level
    for ip, speed in (("192.0.2.2", 240.0), ("192.0.2.1", 120.0)):
        b.apply_state(IspState(isp="gmail", source_ip=ip, speed=speed, updated_at=T0))
    b.apply_state(IspState(isp="yahoo", source_ip="192.0.2.1", speed=30, updated_at=T0))
    g = row(b, "gmail", 10)
    assert g["speed"] == 120 and g["ip_speeds"] == "192.0.2.1 120, 192.0.2.2 240"
    b.apply_state(IspState(isp="gmail", source_ip="192.0.2.2", speed=180.5, updated_at=T0 + 5))
    assert row(b, "gmail", 10)["ip_speeds"] == "192.0.2.1 120, 192.0.2.2 180.5"
    assert row(b, "yahoo", 10)["ip_speeds"] == "192.0.2.1 30"
    # the speed chart stays the ISP's record (IP records do not add points to it)
    assert b.speed_series("gmail", T0)["points"] == [(T0, 120)]
    # kmta status: the levels as data (--json) and as one last column of the text table
    assert row(b, "gmail", 10)["ip_speed_levels"] == {"192.0.2.1": 120, "192.0.2.2": 180.5}
    snap = b.snapshot(T0 + 10)
    lines = format_status(snap["totals"], snap["isps"], T0 + 10).splitlines()
    assert lines[1].split()[-1] == "PER-IP"
    cells = {ln.split()[0]: ln.split()[-1] for ln in lines[2:]}
    assert cells["gmail"] == "192.0.2.1=120,192.0.2.2=180.5"
    assert cells["yahoo"] == "192.0.2.1=30"
